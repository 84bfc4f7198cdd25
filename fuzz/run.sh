#!/usr/bin/env bash
# Runs fuzz targets for a fixed time each (see README.md).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 60 s, every target
#
# Stable Rust with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags); a target dir of
# its own, because the sanitizer flags would rebuild the workspace's cache.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/custody/fuzz-target}"
secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build
mkdir -p artifacts
status=0
for t in "${targets[@]}"; do
  case "$t" in
    tile) dict=dict/tile.dict ;;
    checkpoint) dict=dict/checkpoint.dict ;;
    proof) dict="" ;;
    *) dict=dict/json.dict ;;
  esac
  mkdir -p "corpus/$t"
  log="artifacts/$t.log"
  echo "== $t: ${secs}s"
  if ! cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      ${dict:+-dict=$dict} >"$log" 2>&1; then
    status=1
    echo "   CRASH: see $log and artifacts/$t/"
  fi
  grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|^#[0-9]+.*(DONE|cov:)' "$log" | tail -2 | sed 's/^/   /'
done
exit "$status"
