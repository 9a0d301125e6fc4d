#!/usr/bin/env bash
# Client-side instructions per operation, pgdbm vs raw, measured with callgrind (repeatable on a
# noisy machine, unlike wall-clock time). Each (workload, side) runs twice with different
# operation counts; the difference divided by the extra operations removes setup and warm-up.
#
#   crates/pgdbm-bench/callgrind.sh [workload ...]     (default: all five, concurrency 1)
#
# Build first: CARGO_TARGET_DIR=/work/target-bench cargo build --release -p pgdbm-bench
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-/work/target-bench}/release/pgdbm-bench}
OUT=${OUT:-/tmp/pgdbm-bench-callgrind}
mkdir -p "$OUT"
workloads=("$@")
[ ${#workloads[@]} -eq 0 ] && workloads=(point value fetch1k fetch100k typed1k)

ops() { # small and large op counts per workload
  case $1 in
    point|value) echo "200 1200" ;;
    fetch1k|typed1k) echo "20 120" ;;
    fetch100k) echo "2 6" ;;
  esac
}

ir() { # total Ir of one run
  local file=$OUT/$1.out
  valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" \
    --workload "$2" --conc 1 --rounds 1 --ops "$3" --side "$4" >/dev/null 2>"$OUT/$1.log"
  grep -E '^(summary|totals):' "$file" | head -1 | awk '{print $2}'
}

printf '%-10s %14s %14s %8s\n' workload "pgdbm Ir/op" "raw Ir/op" "pgdbm/raw"
for w in "${workloads[@]}"; do
  read -r lo hi <<<"$(ops "$w")"
  declare -A per
  for side in pgdbm raw; do
    a=$(ir "$w-$side-$lo" "$w" "$lo" "$side")
    b=$(ir "$w-$side-$hi" "$w" "$hi" "$side")
    per[$side]=$(( (b - a) / (hi - lo) ))
  done
  awk -v w="$w" -v p="${per[pgdbm]}" -v r="${per[raw]}" \
    'BEGIN { printf "%-10s %14d %14d %8.3f\n", w, p, r, p / r }'
done
echo "profiles in $OUT (callgrind_annotate --inclusive=yes FILE)"
