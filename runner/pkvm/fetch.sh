#!/bin/bash
# Fetch what the pKVM host kit boots, from Debian's arm64 packages, into a cache directory:
#   fetch.sh CACHE [qemu]
# prints `kernel VERSION PATH` (an uncompressed arm64 Image) and `busybox PATH` (static);
# with `qemu`, also `qemu-root PATH`: Debian's arm64 qemu-system-arm (trixie) with every
# package it depends on, unpacked into one tree, for QEMU with KVM inside the host.
# Everything stays in CACHE; a second run reuses it (the package lists for a day).
#
# The machine's dpkg architecture list is never touched: apt runs with a private
# configuration (arm64 only, its own lists, sources and cache, and an empty status file),
# pointed at the mirror this machine's own apt sources use. The kernel is the newest
# `linux-image-<ver>-arm64` that `linux-image-arm64` in trixie-backports depends on, else
# sid's; it must be at least 7.2, the first upstream kernel that lets userspace create a
# protected VM (KVM_CREATE_VM type bit 31).
set -euo pipefail
cache=${1:?usage: fetch.sh CACHE [qemu]}
want_qemu=${2:-}
mkdir -p "$cache"/apt/lists/partial "$cache"/apt/archives/partial "$cache"/debs
cache=$(cd "$cache" && pwd)

# IOGUARD_DEBIAN_MIRROR overrides the mirror (a local mirror, or a test of the failure).
mirror=${IOGUARD_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -m1 -E '/debian/?$' || true)}
mirror=${mirror:-http://deb.debian.org/debian/}
mirror=${mirror%/}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "fetch.sh: $keyring missing; install it with: apt-get install -y debian-archive-keyring" >&2; exit 2; }

cat > "$cache/apt/sources.list" <<SRC
deb [signed-by=$keyring] $mirror trixie main
deb [signed-by=$keyring] $mirror trixie-backports main
deb [signed-by=$keyring] $mirror sid main
SRC

apt_opts=(
  -oAPT::Architecture=arm64 -oAPT::Architectures=arm64
  -oDir::State::Lists="$cache/apt/lists" -oDir::Etc::SourceList="$cache/apt/sources.list"
  -oDir::Etc::SourceParts=/dev/null -oDir::Cache="$cache/apt" -oDir::Cache::archives="$cache/apt/archives"
  -oDir::State::status=/dev/null -oDebug::NoLocking=1 -oAcquire::Languages=none
  -oAPT::Get::List-Cleanup=0 -qq
)
# A day-old list is fresh enough; a failed update with lists in hand goes on with them.
stamp="$cache/apt/lists/.updated"
if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
  # apt-get update exits 0 when it could not fetch an index ("W: Failed to fetch"): look.
  if apt-get "${apt_opts[@]}" update >"$cache/apt/update.log" 2>&1 \
     && ! grep -q -E '^(W: Failed to fetch|E: )' "$cache/apt/update.log"; then
    touch "$stamp"
  elif [ ! -e "$stamp" ]; then
    echo "fetch.sh: cannot read Debian's arm64 package lists from $mirror:" >&2
    tail -5 "$cache/apt/update.log" >&2
    exit 3
  fi
fi

depends_of() { # the linux-image-<ver>-arm64 that linux-image-arm64 from suite $1 depends on
  apt-cache "${apt_opts[@]}" show "linux-image-arm64/$1" 2>/dev/null \
    | sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*-arm64\).*/\1/p' | sort -V | tail -1 || true
}
image=$(depends_of trixie-backports)
[ -n "$image" ] || image=$(depends_of sid)
[ -n "$image" ] || { echo "fetch.sh: no linux-image-arm64 in trixie-backports or sid at $mirror" >&2; exit 3; }
ver=${image#linux-image-}
ver=${ver%-arm64}-arm64
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
if [ "$major" -lt 7 ] || { [ "$major" -eq 7 ] && [ "$minor" -lt 2 ]; }; then
  echo "fetch.sh: newest arm64 kernel is $ver; protected VMs need at least 7.2" >&2
  exit 3
fi

# In 7.x the Image itself is in linux-binary-<ver> (fall back to the image package).
pkgs=()
if apt-cache "${apt_opts[@]}" show "linux-binary-$ver" >/dev/null 2>&1; then
  pkgs+=("linux-binary-$ver")
else
  pkgs+=("linux-image-$ver")
fi
pkgs+=(busybox-static)
cd "$cache/debs"
deb_of() { # download package $1 unless a .deb of it is here; print its file name
  local have
  have=$(ls "${1}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$have" ]; then
    apt-get "${apt_opts[@]}" download "$1" >/dev/null 2>"$cache/apt/download.log" || {
      echo "fetch.sh: cannot download $1:" >&2; tail -3 "$cache/apt/download.log" >&2; exit 3; }
    have=$(ls "${1}"_*.deb | head -1)
  fi
  echo "$have"
}
extract() { # extract member $2 of .deb $1 to $3
  local tmp
  tmp=$(mktemp -d "$cache/extract.XXXXXX")
  dpkg-deb --fsys-tarfile "$1" | tar -x -C "$tmp" "$2"
  mv "$tmp/$2" "$3"
  rm -rf "$tmp"
}
kernel="$cache/vmlinuz-$ver"
if [ ! -s "$kernel" ]; then
  extract "$(deb_of "${pkgs[0]}")" "./usr/lib/modules/$ver/vmlinuz" "$kernel"
fi
echo "kernel $ver $kernel"
busybox="$cache/busybox"
if [ ! -s "$busybox" ]; then
  extract "$(deb_of busybox-static)" ./usr/bin/busybox "$busybox"
fi
echo "busybox $busybox"

if [ "$want_qemu" = qemu ]; then
  qroot="$cache/qemu-root"
  if [ ! -e "$qroot/.unpacked" ]; then
    rm -rf "$qroot" "$cache/qemu-debs"
    mkdir -p "$qroot" "$cache/qemu-debs/partial"
    # An empty status file: apt takes nothing as installed and fetches the whole closure.
    apt-get "${apt_opts[@]}" -oDir::Cache::archives="$cache/qemu-debs" -t trixie \
        --no-install-recommends install --download-only -y qemu-system-arm \
        >"$cache/apt/qemu.log" 2>&1 || {
      echo "fetch.sh: cannot download qemu-system-arm (arm64) and its dependencies:" >&2
      tail -5 "$cache/apt/qemu.log" >&2; exit 3; }
    for d in "$cache"/qemu-debs/*.deb; do dpkg-deb -x "$d" "$qroot"; done
    rm -rf "$cache/qemu-debs"
    touch "$qroot/.unpacked"
  fi
  echo "qemu-root $qroot"
fi
