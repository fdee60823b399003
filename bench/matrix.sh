#!/usr/bin/env bash
# Wall time of the conformance matrix (`./qemu-run.sh --matrix`): every column's own wall
# time (as the runner measured it, from DIR/matrix.md) and the whole sweep's, build
# included unless the guest is already built. The goal: at most 10 minutes on 2 cores.
#
#   bench/matrix.sh [DIR] [RUNNER OPTIONS...]     (default DIR: target/bench-matrix)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${1:-target/bench-matrix}
shift || true
start=$(date +%s.%N)
status=0
./qemu-run.sh --matrix "$dir" "$@" || status=$?
end=$(date +%s.%N)
[[ -f $dir/matrix.md ]] || { echo "bench/matrix.sh: no $dir/matrix.md (status $status)" >&2; exit 1; }
echo
echo "| column | --hyp | ended | wall time |"
echo "|---|---|---|---|"
# The columns table of matrix.md: | name | `spec` | ended | detected | wall time | why |
awk -F' [|] ' '/^\| column \|/ { on = 1; next } on && /^\|---/ { next } on && /^\| / { print "| " substr($1, 3) " | " $2 " | " $3 " | " $5 " |"; next } on { exit }' "$dir/matrix.md"
awk -v a="$start" -v b="$end" -v s="$status" 'BEGIN { printf "\ntotal: %.1f s (matrix status %d)\n", b - a, s }'
