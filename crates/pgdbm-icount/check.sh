#!/usr/bin/env bash
# The instruction-count guard: client-side instructions per call of pgdbm beside raw
# tokio-postgres, counted by callgrind (repeatable where wall time is noise). Each (workload,
# side) runs twice with different operation counts; the difference over the extra operations
# leaves the cost of one call. Fails when a ratio pgdbm/raw exceeds its limit in limits.txt
# by more than 5 %.
#
#   crates/pgdbm-icount/check.sh [workload ...]      (default: every workload in limits.txt)
#
# Needs valgrind. Builds pgdbm-icount in release (CARGO_TARGET_DIR, default target/).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=crates/pgdbm-icount
cargo build --release --quiet -p pgdbm-icount
BIN=${CARGO_TARGET_DIR:-target}/release/pgdbm-icount
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

ops() { # small and large op counts per workload
  case $1 in
    point|value|update) echo "200 1200" ;;
    fetch1k|typed1k) echo "10 60" ;;
  esac
}

ir() { # instructions of one run
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" "$BIN" \
    --workload "$1" --side "$2" --ops "$3" >/dev/null 2>"$OUT/log" || {
    cat "$OUT/log" >&2
    return 1
  }
  grep -E '^(summary|totals):' "$OUT/cg.out" | head -1 | awk '{print $2}'
}

mapfile -t rows < <(grep -Ev '^\s*(#|$)' "$here/limits.txt")
want=("$@")
failed=0
printf '%-9s %12s %12s %7s %7s %7s  %s\n' workload pgdbm raw ratio limit target verdict
for row in "${rows[@]}"; do
  read -r w target limit <<<"$row"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $w "* ]]; then continue; fi
  read -r lo hi <<<"$(ops "$w")"
  declare -A per
  for side in pgdbm raw; do
    a=$(ir "$w" "$side" "$lo")
    b=$(ir "$w" "$side" "$hi")
    per[$side]=$(( (b - a) / (hi - lo) ))
  done
  verdict=$(awk -v p="${per[pgdbm]}" -v r="${per[raw]}" -v l="$limit" -v t="$target" 'BEGIN {
    ratio = p / r
    if (ratio > l * 1.05) v = "FAIL: over the limit by more than 5 %"
    else if (ratio > t) v = "ok (target not met yet)"
    else v = "ok"
    printf "%.3f|%s", ratio, v }')
  printf '%-9s %12d %12d %7s %7s %7s  %s\n' "$w" "${per[pgdbm]}" "${per[raw]}" \
    "${verdict%%|*}" "$limit" "$target" "${verdict#*|}"
  [[ $verdict == *FAIL* ]] && failed=1
done
exit $failed
