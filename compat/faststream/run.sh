#!/usr/bin/env bash
# Run FastStream's broker tests without and with AuditMiddleware injected, and compare.
#
#   compat/faststream/run.sh FASTSTREAM_CHECKOUT PYTHON [BROKER...]
#
# FASTSTREAM_CHECKOUT: a FastStream source tree of the installed version (its tests/ folder).
# PYTHON: a Python whose environment has FastStream with its test dependencies and audit-plugin.
# BROKER: redis, nats, rabbit (default: all three). Reports go to $OUT (default: ./compat-reports).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
checkout="$(cd "$1" && pwd)"; python="$2"; shift 2
brokers=("${@:-redis nats rabbit}")
out="${OUT:-$PWD/compat-reports}"; mkdir -p "$out"
declare -A marks=([redis]="not slow and not redis_cluster and not redis_sentinel" [nats]="not slow" [rabbit]="not slow")
status=0
cd "$checkout"
for broker in ${brokers[@]}; do
  run() {  # run NAME [pytest args...]
    local name="$1"; shift
    "$python" -m pytest "tests/brokers/$broker" -p no:cacheprovider -m "${marks[$broker]}" -q \
      --junitxml="$out/$broker-$name.xml" "$@" > "$out/$broker-$name.log" 2>&1 || true
  }
  run baseline
  for durability in commit buffered; do
    AUDIT_COMPAT_DURABILITY="$durability" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" run "$durability" -p audit_inject
    echo "== $broker, durability=$durability"
    grep -h "^audit_inject:" "$out/$broker-$durability.log" || true
    "$python" "$here/compare.py" "$out/$broker-baseline.xml" "$out/$broker-$durability.xml" \
      --known-list "$here/known_differences.txt" --durability "$durability" || status=1
  done
done
exit $status
