"""Compare two JUnit XML reports of FastStream's suite: without the middleware (baseline) and with it.

Usage: ``python compare.py BASELINE.xml INJECTED.xml [--known-list FILE] [--durability MODE]``.

Prints the counts of both runs and every test that passes without the
middleware and fails (or errors) with it. A test named in the known list is
reported apart and does not count: one entry a line, ``MODE NODE_ID  # why``,
where ``MODE`` is ``any`` or the durability (``commit``, ``buffered``) the
difference belongs to. Exits 1 when a test that is not on the list differs.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def outcomes(report: Path) -> dict[str, str]:
    """Node id (``path::Class::test``) -> passed / failed / error / skipped."""
    result: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        module, _, classes = _split_module(path)
        node = "::".join(part for part in (f"{module}.py", classes.replace("/", "::"), case.get("name", "")) if part)
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            result[node] = "failed"
        elif "error" in kinds:
            result[node] = "error"
        elif "skipped" in kinds:
            result[node] = "skipped"
        else:
            result[node] = "passed"
    return result


def _split_module(path: str) -> tuple[str, str, str]:
    """``tests/brokers/redis/test_x/TestY`` -> (``tests/brokers/redis/test_x``, ``/``, ``TestY``)."""
    parts = path.split("/")
    for index in range(len(parts), 0, -1):
        candidate = "/".join(parts[:index])
        if Path(f"{candidate}.py").exists():
            return candidate, "/", "/".join(parts[index:])
    return path, "", ""


def known(file: Path | None, durability: str) -> set[str]:
    """The node ids the known list names for ``durability`` (or for any)."""
    if file is None:
        return set()
    entries = (line.split("#", 1)[0].split() for line in file.read_text().splitlines())
    return {entry[1] for entry in entries if len(entry) == 2 and entry[0] in ("any", durability)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline", type=Path)
    parser.add_argument("injected", type=Path)
    parser.add_argument("--known-list", type=Path)
    parser.add_argument("--durability", default="commit")
    args = parser.parse_args()
    before, after = outcomes(args.baseline), outcomes(args.injected)
    for name, run in (("baseline", before), ("injected", after)):
        counts = Counter(run.values())
        print(f"{name}: " + ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped")))
    allowed = known(args.known_list, args.durability)
    broken = sorted(node for node, result in before.items() if result == "passed" and after.get(node) != "passed")
    listed = [node for node in broken if node in allowed]
    unexplained = [node for node in broken if node not in allowed]
    print(f"pass without, fail with: {len(broken)} ({len(listed)} on the known list)")
    for node in listed:
        print(f"  known   {node}")
    for node in unexplained:
        print(f"  BROKEN  {node} ({after.get(node, 'missing')})")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
