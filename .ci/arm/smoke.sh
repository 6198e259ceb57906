#!/bin/bash
# Boots an ARM kernel under qemu-system (../shared/tools/arm-vm) and runs the smoke payload
# (.ci/arm/payload.sh, a busybox sh script) against the static ARM build of ringrelay.
# usage: .ci/arm/smoke.sh ARCH KERNEL [STAGES...]
#   ARCH    arm64 (aarch64 musl binary), armhf (armv7 binary, 32-bit kernel), compat (armv7
#           binary on the arm64 kernel)
#   KERNEL  5.10 or 6.1
#   STAGES  payload stages to run (default: all of them; see payload.sh)
# Environment: ARM_VM (path of the arm-vm tool; default ../shared/tools/arm-vm from the repo
# root, or /work/shared/tools/arm-vm), SMOKE_NOBUILD=1 to skip building, SMOKE_LIMIT (seconds,
# default 600), SMOKE_REPEAT=N to run the stages N times in one boot. Exit code: the payload's (0 = every stage passed).
set -euo pipefail
ARCH=${1:?usage: smoke.sh ARCH KERNEL [STAGES...]} KV=${2:?usage: smoke.sh ARCH KERNEL [STAGES...]}
shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case $ARCH in
  arm64) TARGET=aarch64-unknown-linux-musl; B=aarch64 ;;
  armhf|compat) TARGET=armv7-unknown-linux-gnueabihf; B=armv7 ;;
  *) echo "smoke.sh: ARCH must be arm64, armhf or compat" >&2; exit 2 ;;
esac
VM=${ARM_VM:-}
if [ -z "$VM" ]; then
  for c in "$ROOT/../shared/tools/arm-vm" /work/shared/tools/arm-vm; do
    [ -x "$c" ] && { VM=$c; break; }
  done
fi
[ -n "$VM" ] && [ -x "$VM" ] || { echo "smoke.sh: arm-vm tool not found (set ARM_VM)" >&2; exit 2; }
[ "${SMOKE_NOBUILD:-0}" = 1 ] || "$ROOT/.ci/arm/build.sh" "$B"
BIN=$ROOT/target/$TARGET/release/ringrelay
[ -x "$BIN" ] || { echo "smoke.sh: $BIN missing (run .ci/arm/build.sh)" >&2; exit 2; }

P=$(mktemp -d /tmp/ringrelay-smoke.XXXXXX)
trap 'rm -rf "$P"' EXIT
# Strip the debug info (release builds keep line tables): a smaller initramfs boots faster.
case $TARGET in
  aarch64*) STRIP=aarch64-linux-gnu-strip ;;
  *) STRIP=arm-linux-gnueabihf-strip ;;
esac
"$STRIP" -o "$P/ringrelay" "$BIN" 2>/dev/null || cp "$BIN" "$P/ringrelay"
cp "$ROOT/.ci/arm/payload.sh" "$P/run"
chmod +x "$P/run" "$P/ringrelay"
echo "${*:-all}" > "$P/stages"
echo "${SMOKE_REPEAT:-1}" > "$P/repeat"
SIZE=$(stat -c %s "$P/ringrelay")
echo "$ARCH $KV $TARGET $SIZE bytes stripped" > "$P/build-info"
echo "smoke.sh: $ARCH kernel $KV, $TARGET ($SIZE bytes stripped), stages: ${*:-all}"
"$VM" "$ARCH" "$KV" "$P" "${SMOKE_LIMIT:-600}"
