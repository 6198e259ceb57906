#!/bin/bash
# Lints every man page in man/ with mandoc -T lint (installed when missing) and groff -ww.
# Exit 1 on any warning. usage: .ci/check-man.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mandoc >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends mandoc >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends mandoc >/dev/null; }
fi
status=0
shopt -s nullglob
pages=(man/*.[1-9])
[ ${#pages[@]} -gt 0 ] || { echo "check-man: no pages in man/" >&2; exit 1; }
for page in "${pages[@]}"; do
  # STYLE messages (e.g. "no blank before trailing delimiter") are advice, not errors.
  out=$(mandoc -T lint -W warning "$page" 2>&1 || true)
  if [ -n "$out" ]; then echo "$out"; status=1; fi
  if command -v groff >/dev/null; then
    gout=$(groff -man -ww -z "$page" 2>&1 || true)
    if [ -n "$gout" ]; then echo "$page: groff: $gout"; status=1; fi
  fi
done
[ $status -eq 0 ] && echo "check-man: ${#pages[@]} pages clean"
exit $status
