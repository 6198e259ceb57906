#!/bin/bash
# Cross-builds the static Raspberry Pi binaries:
#   target/aarch64-unknown-linux-musl/release/ringrelay      (arm64, static musl)
#   target/armv7-unknown-linux-gnueabihf/release/ringrelay   (armhf, static glibc)
# Installs what it needs (Debian cross gcc, rustup targets) when missing. Linkers and flags
# come from .cargo/config.toml. Run from anywhere; prints the sizes at the end.
# usage: .ci/arm/build.sh [aarch64|armv7|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/../.."
WHICH=${1:-all}
# RUSTFLAGS would replace the per-target rustflags of .cargo/config.toml (see there).
unset RUSTFLAGS

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
if [ ${#need[@]} -gt 0 ]; then
  echo "build.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
installed=$(rustup target list --installed)
for t in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

targets=()
case $WHICH in
  aarch64) targets=(aarch64-unknown-linux-musl) ;;
  armv7) targets=(armv7-unknown-linux-gnueabihf) ;;
  all) targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf) ;;
  *) echo "usage: $0 [aarch64|armv7|all]" >&2; exit 2 ;;
esac
for t in "${targets[@]}"; do
  echo "build.sh: cargo build --release --target $t"
  cargo build --release --locked --target "$t" --bin ringrelay
  bin=target/$t/release/ringrelay
  # A static binary has no program interpreter; refuse to hand out anything else.
  if command -v file >/dev/null; then
    file "$bin" | grep -q 'statically linked\|static-pie linked' ||
      { echo "build.sh: $bin is not static: $(file "$bin")" >&2; exit 1; }
  fi
  printf 'build.sh: %s %s bytes\n' "$bin" "$(stat -c %s "$bin")"
done
