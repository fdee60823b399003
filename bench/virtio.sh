#!/usr/bin/env bash
# Benchmark of the virtio path: what a request and an output line cost in exits to the
# hypervisor, what a whole suite run costs and where, blk throughput, image size, and the
# suite's wall time against QEMU's floor. Prints one table.
#
#   bench/virtio.sh
#
# Exits are counted by the hypervisor, not the guest: hypmodel (profile android14, the
# default devices on virtio-mmio) with `trace` prints one line per hypercall and per
# trapped access, and each is put in a bucket by where it went and when:
#   boot      before the virtio set-up: discovery, the console's registration
#   set-up    the virtio set-up at boot: probing, registering, sharing the pool, queues
#   output    the UART page (hypmodel counts those accesses rather than tracing them) and
#             the virtio-console carrying the suite's lines
#   I/O       the other virtio devices' windows once they are set up
#   checks    everything else the checks do (their MAPs, stray probes, memshare calls)
# The trace's total is checked against hypmodel's own counters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "bench/virtio.sh: $*" >&2; exit 1; }
# A run's output whatever its status (a failing check still gives figures; the table
# says so), but not a run that did not happen.
run() {
    local out
    out=$(./qemu-run.sh "$@" 2>&1) || true
    grep -q '^SUMMARY:' <<<"$out" || { echo "$out" | tail -n 5 >&2; die "no SUMMARY from: $*"; }
    printf '%s\n' "$out"
}

# Buckets one traced run; prints "boot setup output io checks total virtio_lines
# virtio_line_exits": the last two are the lines virtio-console carried and the exits on
# its window meanwhile (once the devices are dropped, lines go back to the UART).
classify() {
    awk '
    function hex(s,    i, n) {
        s = tolower(s); sub(/^0x/, "", s); n = 0
        for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
        return n
    }
    /^ioguard [0-9.]+: / {
        if (match($0, /console=[a-z0-9]+@0x[0-9a-f]+/)) {
            c = substr($0, RSTART, RLENGTH); sub(/.*@/, "", c); uart = hex(c)
        }
    }
    /^ioguard: output: / {
        phase = "run"
        if (match($0, /virtio-mmio@0x[0-9a-f]+/)) { o = substr($0, RSTART + 12, RLENGTH - 12); out_win = hex(o) }
        next
    }
    /^INFO: virtio set-up at boot/ { phase = "run"; next }
    /^hypmodel: accesses / {
        # The UART page is counted by hypmodel, not traced (a line per character).
        for (i = 1; i <= NF; i++) if ($i ~ /^console=/) { split($i, kv, "="); b["output"] += kv[2]; total += kv[2] }
        next
    }
    /^hypmodel: trace cpu[0-9]+ (dabt|hvc) / {
        kind = $4
        ipa = -1
        if (match($0, /ipa=0x[0-9a-f]+/)) ipa = hex(substr($0, RSTART + 4, RLENGTH - 4))
        else if (match($0, /\(0x[0-9a-f]+,/)) ipa = hex(substr($0, RSTART + 1, RLENGTH - 2))
        is_uart = (kind == "dabt" && ipa >= uart && ipa < uart + 4096)
        is_out = (kind == "dabt" && out_win > 0 && ipa >= out_win && ipa < out_win + 512)
        is_virtio = (kind == "dabt" && ipa >= 167772160 && ipa < 167788544)  # 0xa000000..0xa004000
        total++
        if (phase != "run") {
            if (is_uart) b["output"]++
            else if ($5 ~ /^(MEM_SHARE|MEM_UNSHARE|HYP_MEMINFO)/ || is_virtio || ipa >= 274877906944) b["setup"]++
            else if (kind == "hvc" && $5 ~ /^MMIO_GUARD_(MAP|UNMAP)/ && ipa != uart) b["setup"]++
            else b["boot"]++
        } else if (is_uart || is_out) { b["output"]++; if (is_out && !dropped) vexits++ }
        else if (is_virtio) b["io"]++
        else b["checks"]++
        next
    }
    /^hypmodel: / { next }
    phase == "run" && /^(PASS|FAIL|SKIP): virtio: pool-unshared/ { dropped = 1 }
    phase == "run" && !dropped && /^(INFO|PASS|FAIL|SKIP|KFAIL|SUMMARY|ioguard:|EXIT)/ { lines++ }
    END {
        printf "%d %d %d %d %d %d %d %d\n", b["boot"], b["setup"], b["output"], b["io"], b["checks"], total, lines, vexits
    }
    '
}

# hypmodel's own count of exits in a run: hypercalls and trapped accesses.
counted() {
    awk -F'[ =]' '
    /^hypmodel: calls / { n += $NF }
    /^hypmodel: accesses / {
        for (i = 1; i <= NF; i++) if ($i ~ /^(forwarded|refused|dropped|other_exceptions)$/) n += $(i + 1)
    }
    END { print n + 0 }'
}

image=target/aarch64-unknown-none/release/ioguard.bin
printf '%-58s %14s %10s\n' "measure" "value" "goal"
row() { printf '%-58s %14s %10s\n' "$1" "$2" "$3"; }

# 1. A 4 KiB blk request: exits on the blk window per request (bench: blk, 512 requests).
out=$(run --hyp model:android14,trace --append 'only=bench:blk')
detail=$(grep -o 'bench: blk: .*' <<<"$out")
win=$(grep -oE 'virtio-mmio@0x[0-9a-f]+' <<<"$detail" | head -1 | sed 's/.*@//')
requests=$(grep -oE '[0-9]+ requests' <<<"$detail" | grep -oE '[0-9]+')
after=$(sed -n '/^ioguard: output: /,$p' <<<"$out")
blk_exits=$(grep -E '^hypmodel: trace cpu[0-9]+ dabt ' <<<"$after" | grep -oE 'ipa=0x[0-9a-f]+' | \
    awk -v w="$((win))" '
        function hex(s,    i, n) {
            s = tolower(s); sub(/^0x/, "", s); n = 0
            for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
            return n
        }
        { a = hex(substr($0, 5)); if (a >= w && a < w + 512) n++ } END { print n + 0 }')
row "MMIO traps per 4 KiB blk request (hypmodel android14)" \
    "$(awk -v e="$blk_exits" -v r="$requests" 'BEGIN { printf "%.3f", e / r }')" "1"

# 2-3. A whole suite run, bucketed; and exits per output line.
out=$(run --hyp model:android14,trace)
read -r boot setup output io checks total lines vexits < <(classify <<<"$out")
hyp_total=$(counted <<<"$out")
[ "$total" = "$hyp_total" ] || die "the trace shows $total exits, hypmodel counted $hyp_total"
row "exits per output line through virtio-console ($lines lines)" \
    "$(awk -v e="$vexits" -v l="$lines" 'BEGIN { printf "%.2f", e / l }')" "<= 1"
row "exits per suite run (hypmodel android14, default devices)" "$total" "<= 1000"
row "  boot (discovery, the console's registration)" "$boot" ""
row "  virtio set-up (probe, register, share the pool, queues)" "$setup" ""
row "  output (UART and virtio-console)" "$output" ""
row "  I/O (virtio requests)" "$io" ""
row "  checks" "$checks" ""
uart=$(./qemu-run.sh --hyp model:android14 --append output=uart 2>&1 | counted || true)
row "exits per suite run with output=uart, for comparison" "$uart" ""

# 4. blk throughput.
for hyp in plain model:android14; do
    d=$(run --hyp "$hyp" --append 'only=bench:blk' | grep -o 'bench: blk: .*')
    w=$(grep -oE 'write [0-9]+' <<<"$d" | grep -oE '[0-9]+')
    r=$(grep -oE 'read [0-9]+' <<<"$d" | grep -oE '[0-9]+')
    row "blk throughput, $hyp: write / read (KiB/s)" "$w / $r" ""
done

# 5. Image size.
row "image size (bytes, $image)" "$(stat -c %s "$image")" ""

# 6. The whole suite against QEMU's floor (the runner's own benchmark).
for hyp in plain model:android14; do
    b=$(./qemu-run.sh --hyp "$hyp" --bench 5 2>&1 || true)
    suite=$(grep -E '^ioguard, to SUMMARY line' <<<"$b" | awk '{print $5}')
    floor=$(grep -E '^QEMU floor' <<<"$b" | awk '{print $6}')
    ratio=$(grep -E '^ioguard, to SUMMARY line' <<<"$b" | awk '{print $NF}')
    row "suite wall time to SUMMARY, $hyp (median of 5, s)" "$suite" ""
    row "  QEMU's floor (s); ratio" "$floor; $ratio" "<= 1.5"
done
