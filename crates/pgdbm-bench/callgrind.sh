#!/usr/bin/env bash
# Client-side instructions per operation, pgdbm vs raw, measured with callgrind (repeatable on a
# noisy machine, unlike wall-clock time). Each (workload, side) runs twice with different
# operation counts; the difference divided by the extra operations removes setup and warm-up.
#
#   crates/pgdbm-bench/callgrind.sh [workload ...]     (default: all five, concurrency 1)
#
# SIDES picks the contenders (default "pgdbm raw"; the ratio columns divide the first by each
# other one), CONC the concurrency (default 1). What observability costs:
#   SIDES="pgdbm pgdbm-traced pgdbm-monitor" crates/pgdbm-bench/callgrind.sh point fetch1k
#
# Build first: CARGO_TARGET_DIR=/work/target-bench cargo build --profile profiling -p pgdbm-bench
# (release with line tables, so that callgrind_annotate names the lines)
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-/work/target-bench}/profiling/pgdbm-bench}
OUT=${OUT:-/tmp/pgdbm-bench-callgrind}
CONC=${CONC:-1}
read -ra sides <<<"${SIDES:-pgdbm raw}"
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
    --workload "$2" --conc "$CONC" --rounds 1 --ops "$3" --side "$4" >/dev/null 2>"$OUT/$1.log"
  grep -E '^(summary|totals):' "$file" | head -1 | awk '{print $2}'
}

printf '%-10s' workload
for side in "${sides[@]}"; do printf ' %16s' "$side Ir/op"; done
for side in "${sides[@]:1}"; do printf ' %16s' "${sides[0]}/$side"; done
printf '\n'
for w in "${workloads[@]}"; do
  read -r lo hi <<<"$(ops "$w")"
  declare -A per
  for side in "${sides[@]}"; do
    a=$(ir "$w-$side-c$CONC-$lo" "$w" "$lo" "$side")
    b=$(ir "$w-$side-c$CONC-$hi" "$w" "$hi" "$side")
    per[$side]=$(( (b - a) / (hi - lo) ))
  done
  printf '%-10s' "$w"
  for side in "${sides[@]}"; do printf ' %16d' "${per[$side]}"; done
  for side in "${sides[@]:1}"; do
    awk -v p="${per[${sides[0]}]}" -v r="${per[$side]}" 'BEGIN { printf " %16.3f", p / r }'
  done
  printf '\n'
done
echo "profiles in $OUT (callgrind_annotate --inclusive=yes FILE)"
