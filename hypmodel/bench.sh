#!/usr/bin/env bash
# Overhead of hypmodel: the ioguard guest booted N times under plain QEMU (TCG, the guest at
# EL1, QEMU's own PSCI) and N times under hypmodel (the guest at EL1 under our EL2), as the
# median wall time of whole QEMU runs and the ratio to plain QEMU. Prints a Markdown table.
#
#   hypmodel/bench.sh [N]          (default N = 10; needs qemu-system-aarch64)
set -euo pipefail
N=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
R=$TARGET/aarch64-unknown-none/release
cargo build --quiet --release --target aarch64-unknown-none -p hypmodel --bin hypmodel
cargo build --quiet --release --target aarch64-unknown-none -p ioguard
OBJCOPY=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-objcopy | head -n1)
IMG=$R/ioguard-bench.bin
"$OBJCOPY" -O binary "$R/ioguard" "$IMG"

COMMON=(-cpu max -smp 2 -m 512M -nographic -nic none -no-reboot)
plain() {
    qemu-system-aarch64 -M virt,gic-version=3 "${COMMON[@]}" -kernel "$IMG" -append ""
}
hyp() { # $1: hypmodel options
    qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 "${COMMON[@]}" -kernel "$R/hypmodel" \
        -device loader,file="$IMG",addr=0x41000000,force-raw=on -append "$1 --"
}

# median wall seconds of N runs of "$@"; checks each run reached the guest's EXIT line
median() {
    local times=() out t0 t1
    for _ in $(seq "$N"); do
        t0=$(date +%s.%N)
        out=$("$@" 2>&1 || true)
        t1=$(date +%s.%N)
        if ! grep -q "EXIT: STATUS=" <<<"$out"; then
            echo "bench: a run did not reach EXIT: $*" >&2
            tail -n 5 <<<"$out" >&2
            exit 1
        fi
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f", m}'
}

base=$(median plain)
echo "| run ($N each, ioguard guest, -smp 2 -m 512M) | median wall (s) | ratio to plain QEMU |"
echo "|---|---:|---:|"
printf '| plain QEMU (TCG, guest at EL1) | %s | 1.00 |\n' "$base"
for opts in "hypmodel.profile=android14" "hypmodel.profile=kvm" "hypmodel.profile=android16 hypmodel.granule=64k" \
            "hypmodel.profile=android14 hypmodel.trace"; do
    m=$(median hyp "$opts")
    printf '| hypmodel `%s` | %s | %s |\n' "$opts" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}')"
done
