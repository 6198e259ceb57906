#!/bin/sh
# Smoke payload run inside the ARM guest (busybox only) by .ci/arm/smoke.sh via arm-vm.
# /payload holds: ringrelay (static), run (this script), stages (which stages to run: stage
# names or "all"), build-info. Every stage prints PASS or FAIL; the exit code is the number of
# failed stages. Everything is bounded with `timeout`: the guest is 10-30x slower than a host.
cd /payload || exit 100
PATH=/payload:$PATH
export PATH
STAGES=$(cat stages 2>/dev/null || echo all)
[ "$STAGES" = all ] && STAGES="info help probe"
FAILED=0
T=/tmp/smoke
mkdir -p $T

pass() { echo "SMOKE PASS $1"; }
fail() { echo "SMOKE FAIL $1: $2"; FAILED=$((FAILED + 1)); }

stage_info() {
  echo "build: $(cat build-info 2>/dev/null)"
  echo "kernel: $(uname -a)"
  echo "memlock: $(ulimit -l 2>/dev/null)"
  pass info
}

# What this busybox offers (nc options differ between builds).
stage_tools() {
  busybox 2>&1 | sed -n '/Currently defined functions/,$p' | tr -s ' \n' ' '
  echo
  nc --help 2>&1 | head -20
  pass tools
}

stage_help() {
  ringrelay --help > $T/help.out 2>&1
  if grep -q "run" $T/help.out && grep -q "probe" $T/help.out; then pass help
  else fail help "no usage text: $(head -c 300 $T/help.out)"; fi
}

stage_probe() {
  timeout 60 ringrelay probe > $T/probe.out 2>&1
  rc=$?
  cat $T/probe.out
  timeout 60 ringrelay probe --baseline > $T/probe-b.out 2>&1
  rcb=$?
  if [ $rc -eq 0 ] && [ $rcb -eq 0 ]; then pass probe
  else fail probe "exit $rc (baseline: $rcb)"; fi
}

for s in $STAGES; do
  echo "=== stage $s"
  if type "stage_$s" >/dev/null 2>&1; then "stage_$s"; else fail "$s" "no such stage"; fi
done
echo "SMOKE SUMMARY failed=$FAILED stages=\"$STAGES\""
exit $FAILED
