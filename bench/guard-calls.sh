#!/usr/bin/env bash
# Benchmark of the ioremap layer's guard hypercalls: MAPs per distinct granule and UNMAPs
# per last release, as the guest's layer counts them and as hypmodel counts them, for
# every profile with a guard and every granule. Both ratios must be exactly 1.
#
#   bench/guard-calls.sh
#
# The workload is the `ioremap: windows` check: all 32 virtio-mmio windows of QEMU virt
# (0x200 bytes each, 8 per 4 KiB page) mapped, then released. hypmodel's numbers include
# the console's one MAP made at boot, which is subtracted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

printf '%-22s %8s %9s %11s %9s %11s %10s %12s\n' \
    "hypervisor" "granules" "layer MAP" "layer UNMAP" "hyp MAP" "hyp UNMAP" "MAP/gran" "UNMAP/relse"
for profile in android13 android14 android16 upstream; do
    for granule in 4k 16k 64k; do
        out=$(./qemu-run.sh --hyp "model:$profile,granule=$granule" --append 'only=ioremap:windows' 2>&1) || {
            echo "$profile $granule: run failed" >&2; echo "$out" | tail -n 5 >&2; exit 1; }
        info=$(grep -o 'guard calls: [0-9]* distinct granules, [0-9]* MAPs, [0-9]* UNMAPs' <<<"$out")
        read -r granules maps unmaps < <(sed -E 's/guard calls: ([0-9]+) distinct granules, ([0-9]+) MAPs, ([0-9]+) UNMAPs/\1 \2 \3/' <<<"$info")
        # hypmodel counts calls; a range call (android16) registers a run of granules, so
        # its count is of calls, not granules.
        hmap=$(grep -oE 'hypmodel: calls MMIO_R?GUARD_MAP=[0-9]+' <<<"$out" | awk -F= '{s+=$2} END {print s+0}' || true)
        hunmap=$(grep -oE 'hypmodel: calls MMIO_R?GUARD_UNMAP=[0-9]+' <<<"$out" | awk -F= '{s+=$2} END {print s+0}' || true)
        hmap=$((hmap - 1)) # the console's MAP at boot
        releases=$granules
        [ "$profile" = upstream ] && releases=0 # no UNMAP in that ABI
        ratio() { if [ "$2" = 0 ]; then echo "n/a"; else awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; fi; }
        printf '%-22s %8s %9s %11s %9s %11s %10s %12s\n' "$profile,$granule" "$granules" "$maps" "$unmaps" \
            "$hmap" "$hunmap" "$(ratio "$maps" "$granules")" "$(ratio "$unmaps" "$releases")"
    done
done
