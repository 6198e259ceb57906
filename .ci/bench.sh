#!/bin/bash
# Quick benchmarks for CI: the relay bench in its quick mode (RELAY_BENCH_QUICK=1, under a
# minute of measuring after the build), the decimation bench (a few seconds, it has no quick
# mode) and the scale bench in its quick mode (memory and start-up, one relay per CPU). Prints
# their output. Slow numbers are not failures: the exit status is non-zero only when a bench
# fails to build or to run (the relay bench exits 1 when a ringrelay cell could not
# be measured at all). usage: .ci/bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
echo "=== relay bench (quick)"
RELAY_BENCH_QUICK=1 cargo bench --bench relay || { echo "bench: relay bench FAILED" >&2; status=1; }
echo
echo "=== decimate bench"
cargo bench --bench decimate || { echo "bench: decimate bench FAILED" >&2; status=1; }
echo
echo "=== scale bench (quick)"
SCALE_BENCH_QUICK=1 cargo bench --bench scale || { echo "bench: scale bench FAILED" >&2; status=1; }
exit $status
