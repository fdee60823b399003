#!/usr/bin/env bash
# Benchmark of ioguard on the real pKVM host (`--hyp pkvm`): for each VM kind, the VMM's
# start to the guest's power-off (the VMM measures it: `vmm: run took N ms`; goal for the
# protected VM: at most 1.5 s inside the emulated host), the exits the VMM handled by kind,
# the host's uptime at power-off, and the whole cycle as the runner sees it (kit cached,
# guest and VMM built: installs and downloads excluded). Prints one table; N runs each,
# the median of each figure.
#
#   bench/pkvm.sh [N]          (default 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-3}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench/pkvm.sh: N is a whole number >= 1" >&2; exit 2; }

die() { echo "bench/pkvm.sh: $*" >&2; exit 1; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print v[int((NR + 1) / 2)] }'; }

# Warm up: fetch the kit, build the guest and the VMM (not measured).
./qemu-run.sh --hyp pkvm --append 'only=boot:device-tree' >/dev/null 2>&1 \
    || die "the warm-up run failed: ./qemu-run.sh --hyp pkvm --append 'only=boot:device-tree'"

printf '| VM | host CPU | VMM start to power-off (ms) | MMIO exits (by device) | system events | host uptime at power-off (s) | whole cycle (s) | checks (pass/fail/skip) |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for spec in "pkvm:protected,cpu=max" "pkvm:protected,layout=crosvm,cpu=max" \
            "pkvm:ordinary,cpu=max" "pkvm:protected,cpu=cortex-a72" "pkvm:qemu,cpu=max"; do
    runs=() ; cycles=() ; uptimes=() ; out=""
    for _ in $(seq "$n"); do
        start=$(date +%s.%N)
        out=$(./qemu-run.sh --smp 2 --hyp "$spec" --timeout 300 2>&1) || true
        end=$(date +%s.%N)
        grep -q '^SUMMARY:' <<<"$out" || { tail -n 5 <<<"$out" >&2; die "no SUMMARY from --hyp $spec"; }
        cycles+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')")
        runs+=("$(sed -n 's/^vmm: run took \([0-9]*\) ms.*/\1/p' <<<"$out")")
        uptimes+=("$(sed -n 's/^\[ *\([0-9.]*\)\] reboot: Power down.*/\1/p' <<<"$out")")
    done
    vm=${spec%%,*}; vm=${vm#pkvm:}
    layout=qemu; [[ $spec == *layout=crosvm* ]] && layout=crosvm
    [[ $vm == qemu ]] && layout="QEMU virt, -accel kvm"
    cpu=${spec##*cpu=}
    exits=$(sed -n 's/^vmm: exits: mmio=\([0-9]*\) (\([^)]*\)).*/\1 (\2)/p' <<<"$out")
    events=$(sed -n 's/^vmm: exits: .*system_event=\([0-9]*\).*/\1/p' <<<"$out")
    totals=$(sed -n 's/^ioguard: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped.*/\1\/\2\/\3/p' <<<"$out")
    printf '| %s (%s) | %s | %s | %s | %s | %s | %s | %s |\n' "$vm" "$layout" "$cpu" \
        "$(printf '%s\n' "${runs[@]}" | grep . | median)" "${exits:-n/a (QEMU)}" "${events:-n/a}" \
        "$(printf '%s\n' "${uptimes[@]}" | grep . | median)" \
        "$(printf '%s\n' "${cycles[@]}" | median)" "$totals"
done
echo
echo "median of $n run(s) each; ./qemu-run.sh --smp 2 --hyp SPEC; figures from the VMM's own lines (vmm: run took, vmm: exits) and the host kernel's power-off timestamp"
