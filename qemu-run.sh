#!/usr/bin/env bash
# Build the ioguard release image and boot it on QEMU `virt` (TCG). See ./qemu-run.sh --help.
# The work is done by the `ioguard-run` binary of runner/: it installs what a fresh machine
# lacks (the guest's Rust target through rust-toolchain.toml; Debian's qemu-system-arm when
# run as root, otherwise it prints the exact command), builds, boots and reports.
set -euo pipefail

# Relative paths in the options (--image, --tap, --junit, -dtb ...) are the caller's.
export IOGUARD_RUN_CWD="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")"
exec cargo run --release -q -p ioguard-runner --bin ioguard-run -- "$@"
