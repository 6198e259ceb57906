#!/bin/bash
# Builds both static ARM binaries once, then runs the smoke payload on each ARCH:KERNEL given
# (default: the full matrix) and prints one summary line per VM. Exit 1 if any failed.
# usage: .ci/arm/matrix.sh [ARCH:KERNEL ...]   e.g. .ci/arm/matrix.sh arm64:5.10 armhf:6.1
set -uo pipefail
cd "$(dirname "$0")/../.."
vms=("$@")
[ ${#vms[@]} -gt 0 ] || vms=(arm64:5.10 arm64:6.1 armhf:6.1 compat:6.1 armhf:5.10)
.ci/arm/build.sh all || exit 1
logdir=${SMOKE_LOGS:-target/arm-smoke}
mkdir -p "$logdir"
summary=() failed=0
for vm in "${vms[@]}"; do
  arch=${vm%%:*} kv=${vm#*:}
  log=$logdir/$arch-$kv.log
  start=$(date +%s)
  SMOKE_NOBUILD=1 .ci/arm/smoke.sh "$arch" "$kv" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  line=$(grep -a "SMOKE SUMMARY" "$log" | tail -1 | tr -d '\r')
  rss=$(grep -a "^rss:" "$log" | tail -1 | tr -d '\r')
  if [ $rc -eq 0 ]; then res=PASS; else res="FAIL($rc)"; failed=1; fi
  summary+=("$arch $kv: $res in ${secs}s; $line; $rss")
  if [ $rc -ne 0 ]; then grep -a "SMOKE FAIL" "$log"; echo "(full log: $log)"; fi
done
printf 'arm matrix: %s\n' "${summary[@]}"
exit $failed
