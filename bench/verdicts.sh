#!/usr/bin/env bash
# The verdict of every check in every configuration the suite knows: plain QEMU (1 and 2
# CPUs), hypmodel in every profile and granule, and every public mutant. One file per
# configuration in OUTDIR, a `status N` line then `KIND group: case` lines, plus the whole
# transcript in NAME.full; compare two trees' verdicts with `diff -r -x '*.full' A B`.
#
#   bench/verdicts.sh OUTDIR
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p ioguard-runner --bin ioguard-run
bin=target/release/ioguard-run
run() {
    local name=$1; shift
    local status=0
    timeout 120 "$bin" "$@" > "$out/$name.full" 2>&1 || status=$?
    echo "status $status" > "$out/$name"
    grep -E '^(PASS|FAIL|SKIP|KFAIL): ' "$out/$name.full" \
        | sed -E 's/^([A-Z]+): ([a-z0-9-]+: [a-z0-9-]+).*/\1 \2/' >> "$out/$name" || true
}
run plain-smp1
run plain-smp2 --smp 2
for p in android13 android14 android16 upstream kvm pkvm; do
    for g in 4k 16k 64k; do
        run "model-$p-$g" --smp 2 --hyp "model:$p,granule=$g"
    done
done
mutants=$(sed -n '/^pub const MODEL_MUTANTS/,/^];/p' runner/src/hyp.rs | grep -o '"[a-z0-9-]*"' | tr -d '"')
for m in $mutants; do
    case $m in
        granule-mismatch) run "mutant-$m" --smp 2 --hyp "model:android14,mutant=$m,granule=16k" ;;
        rguard-first-only | share-x1-zero) run "mutant-$m" --smp 2 --hyp "model:android16,mutant=$m" ;;
        *) run "mutant-$m" --smp 2 --hyp "model:android14,mutant=$m" ;;
    esac
done
ls "$out" | grep -vc '\.full$'
