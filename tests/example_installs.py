"""Run an example as if only the install the README shows for it had been done.

The README's examples table names, per script, what its install line adds
(``pip install -e ".[crypto]"``, other packages) on top of the set-up command (the core
and both backends). Building a fresh virtual environment per install line
takes minutes here, so the suite installs the union once and runs each
example under an import guard instead: every module that only distributions
*outside* that install provide is made unimportable, so an example that
needs more than its documented install fails with ``ModuleNotFoundError``,
as it would for a user who followed the README.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.cli_support import cli_env

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"

SETUP_DISTRIBUTIONS = ("audit-plugin", "audit-plugin-postgres")
"""What the README's set-up command installs (``-e . -e backends/postgres``; SQLite comes with the core)."""

ALWAYS_PRESENT = frozenset({"pip"})
"""In every new virtual environment."""

_ROW = re.compile(r"^\|\s*`examples/(?P<script>[\w]+\.py)`\s*\|(?P<cells>.*)$", re.MULTILINE)
_EXTRAS = re.compile(r"\.\[(?P<extras>[\w,-]+)\]")

GUARD = """
import importlib.abc, json, runpy, sys

blocked = frozenset(json.load(open(sys.argv[1])))
install = sys.argv[2]

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by: {install})", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def documented_installs() -> dict[str, tuple[str, ...]]:
    """Each script in the README's examples table and what its install line adds to the set-up.

    ``.[crypto]`` becomes the extra ``"[crypto]"``; other arguments
    (``"a2a-sdk[http-server]"``, ``uvicorn``) are requirements as written.
    """
    found = {}
    for row in _ROW.finditer(README.read_text()):
        cell = row["cells"].rsplit("|", 2)[-2]  # the last cell: what to install first
        command = re.search(r"`([^`]*pip install [^`]*)`", cell)
        added: list[str] = []
        for argument in shlex.split(command[1].split("pip install", 1)[1]) if command else []:
            extras = _EXTRAS.fullmatch(argument)
            if extras:
                added += [f"[{extra}]" for extra in extras["extras"].split(",")]
            elif not argument.startswith(("-", ".")):
                added.append(argument)
        found[row["script"]] = tuple(added)
    return found


def install_line(added: tuple[str, ...]) -> str:
    extras = [item[1:-1] for item in added if item.startswith("[")]
    core = f'-e ".[{",".join(extras)}]"' if extras else "-e ."
    others = " ".join(shlex.quote(item) for item in added if not item.startswith("["))
    return f"pip install {core} -e backends/postgres {others}".rstrip()


def distributions_installed_by(added: tuple[str, ...]) -> frozenset[str]:
    """The set-up's distributions, plus what ``added`` names, and everything they require, transitively."""
    extras = [item[1:-1] for item in added if item.startswith("[")]
    wanted = [Requirement(f"audit-plugin[{','.join(extras)}]" if extras else "audit-plugin")]
    wanted += [Requirement(name) for name in SETUP_DISTRIBUTIONS[1:]]
    wanted += [Requirement(item) for item in added if not item.startswith("[")]
    seen: set[tuple[str, frozenset[str]]] = set()
    names = set(ALWAYS_PRESENT)
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional part not installed here (the OTLP exporter): nothing of it can be imported
        for text in distribution.requires or []:
            needed = Requirement(text)
            active = ("", *requirement.extras)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in active):
                wanted.append(needed)
    return frozenset(names)


def _modules_of(distribution: importlib.metadata.Distribution) -> set[str]:
    """Every module and package (namespace packages included) a distribution's files make importable."""
    modules = set()
    for file in distribution.files or []:
        parts = file.parts
        if ".." in parts or not file.name.endswith((".py", ".pyi", ".so", ".pyd")):
            continue
        stem = file.name.split(".", 1)[0]
        dotted = [*parts[:-1]] if stem == "__init__" else [*parts[:-1], stem]
        if dotted and all(part.isidentifier() for part in dotted):
            modules.update(".".join(dotted[: depth + 1]) for depth in range(len(dotted)))
    return modules


@functools.cache
def modules_not_installed_by(extras: tuple[str, ...]) -> frozenset[str]:
    """Modules that only distributions outside that install provide."""
    allowed = distributions_installed_by(extras)
    inside: set[str] = set()
    outside: set[str] = set()
    for distribution in importlib.metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        (inside if name in allowed else outside).update(_modules_of(distribution))
    return frozenset(outside - inside)


def run_example(
    script: str, *args: str, cwd: Path, extras: tuple[str, ...] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/SCRIPT ARGS`` with only what its README install line provides importable.

    ``extras`` (``("[crypto]",)``, requirements as written) overrides the
    README's, to show that the guard bites.
    """
    if extras is None:
        extras = documented_installs()[script]
    blocked = cwd / ".blocked-modules.json"
    blocked.write_text(json.dumps(sorted(modules_not_installed_by(extras))))
    command = [sys.executable, "-c", GUARD, str(blocked), install_line(extras), str(EXAMPLES / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, env=cli_env(**env))
