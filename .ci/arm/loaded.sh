#!/bin/bash
# The SIGTERM-drain proof on a Raspberry Pi kernel: the `term` and `splice` stages N times in a
# row (default 10) in the arm64 5.10 guest while the host's CPUs are kept busy, so that the
# guest is slow and preempted at random points. Every round must pass.
# usage: .ci/arm/loaded.sh [ROUNDS] [ARCH:KERNEL]
set -uo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-10} vm=${2:-arm64:5.10}
arch=${vm%%:*} kv=${vm#*:}
hogs=()
for _ in $(seq "$(nproc)"); do
  sh -c 'while :; do :; done' & hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
log=${SMOKE_LOGS:-target/arm-smoke}/loaded-$arch-$kv.log
mkdir -p "$(dirname "$log")"
SMOKE_REPEAT=$rounds SMOKE_LIMIT=$((rounds * 300)) .ci/arm/smoke.sh "$arch" "$kv" term splice > "$log" 2>&1
rc=$?
passes=$(grep -ac "SMOKE PASS" "$log")
echo "arm loaded $arch $kv: $passes of $((rounds * 2)) stage runs passed (term and splice, $rounds rounds, ${#hogs[@]} host CPUs busy); exit $rc; log $log"
grep -a "SMOKE FAIL" "$log"
exit $rc
