#!/bin/bash
# Builds the .deb packages with cargo-deb (installed when missing): amd64 from a native build,
# arm64 and armhf from the static cross builds of build.sh, and checks each package holds the
# files an operator relies on. Packages land in target/debian/.
# usage: .ci/arm/deb.sh [amd64|arm64|armhf ...]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/../.."
unset RUSTFLAGS
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)
for a in "${arches[@]}"; do
  case $a in
    amd64) t=() ;;
    arm64) .ci/arm/build.sh aarch64; t=(--target aarch64-unknown-linux-musl --no-build) ;;
    armhf) .ci/arm/build.sh armv7; t=(--target armv7-unknown-linux-gnueabihf --no-build) ;;
    *) echo "deb.sh: unknown architecture $a" >&2; exit 2 ;;
  esac
  deb=$(cargo deb --locked --strip "${t[@]}" 2>/dev/null | tail -1)
  [ -f "$deb" ] || { echo "deb.sh: cargo deb for $a produced nothing" >&2; exit 1; }
  arch=$(dpkg-deb -f "$deb" Architecture)
  [ "$arch" = "$a" ] || { echo "deb.sh: $deb is $arch, not $a" >&2; exit 1; }
  list=$(dpkg-deb -c "$deb")
  for f in ./usr/bin/ringrelay ./etc/ringrelay.conf ./etc/init.d/ringrelay \
           ./lib/systemd/system/ringrelay.service ./lib/systemd/system/ringrelay@.service \
           ./usr/lib/tmpfiles.d/ringrelay.conf \
           ./usr/share/man/man8/ringrelay.8.gz ./usr/share/man/man5/ringrelay.conf.5.gz \
           ./usr/share/man/man7/ringrelay-shm.7.gz; do
    grep -q " $f\$" <<<"$list" || { echo "deb.sh: $deb lacks $f" >&2; exit 1; }
  done
  dpkg-deb -I "$deb" conffiles | grep -qx /etc/ringrelay.conf ||
    { echo "deb.sh: /etc/ringrelay.conf is not a conffile in $deb" >&2; exit 1; }
  dpkg-deb -I "$deb" postinst | grep -q "adduser --system" ||
    { echo "deb.sh: $deb does not create the ringrelay user" >&2; exit 1; }
  echo "deb.sh: $deb ($(stat -c %s "$deb") bytes, $arch)"
done
