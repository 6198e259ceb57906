#!/bin/bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (FUZZ_SECONDS, default 20).
# Installs what it needs when missing: a C++ compiler (libFuzzer is C++), the nightly toolchain
# (cargo fuzz needs -Z flags) and cargo-fuzz itself. Exit 1 when a target crashes or fails to
# build; a crash leaves its input in fuzz/artifacts/TARGET/.
# usage: [FUZZ_SECONDS=N] .ci/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}

if ! command -v c++ >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends g++ >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends g++ >/dev/null; }
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  # Every [[bin]] of the fuzz crate, in the order fuzz/Cargo.toml lists them.
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets in fuzz/Cargo.toml" >&2; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  dirs=("fuzz/corpus/$t")
  [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
  echo "=== fuzz $t for ${secs}s (${dirs[*]})"
  # New inputs go to the first directory (the corpus, ignored by git); seeds are only read.
  # libFuzzer is chatty: keep its log and show the end, or much more of it on a failure.
  if cargo +nightly fuzz run --fuzz-dir fuzz "$t" "${dirs[@]}" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss)' "$log" || tail -n 5 "$log"
  else
    tail -n 80 "$log"
    echo "fuzz: $t FAILED (a crashing input, if any, is in fuzz/artifacts/$t/)" >&2
    status=1
  fi
done
exit $status
