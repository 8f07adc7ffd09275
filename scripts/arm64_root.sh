#!/usr/bin/env bash
# Build a Debian arm64 root in which phone artifacts run on arm64 kernels under qemu-user (issue 24).
#
#   sudo scripts/arm64_root.sh [ROOT]   # default ROOT: $EDGELLM_ARM64_ROOT, else ~/.cache/edgellm/arm64-root
#                                       # (about 1-2 minutes, ~250 MB; `make arm64-root` runs it)
#   chroot ROOT /usr/bin/qemu-aarch64-static -cpu cortex-a76 /usr/bin/python3.11 -c 'import onnxruntime'
#
# What it does, as root (chroot needs it):
#   1. debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 (the downloaded packages are
#      unpacked with dpkg -x: no second stage, nothing runs inside the root while it is made);
#   2. qemu-aarch64-static from Debian's qemu-user-static package, unpacked into the root's /usr/bin;
#   3. aarch64 wheels of the runtimes at the project's pinned versions (constraints.txt), downloaded on the
#      host with pip and unzipped into the root's dist-packages: onnxruntime, ai-edge-litert, numpy (and their
#      pure-Python dependencies).
# Run the runtimes with `chroot ROOT /usr/bin/qemu-aarch64-static ... /usr/bin/python3.11`, with neither /proc
# nor /sys mounted inside (with `qemu-aarch64-static -L ROOT` the runtimes' cpuinfo reads the x86 host's /sys
# and crashes). The root is cached: a second run with the same pins only checks it (ROOT/.edgellm-arm64.json).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
root="${1:-${EDGELLM_ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgellm/arm64-root}}"
suite="${ARM64_SUITE:-bookworm}"
mirror="${ARM64_MIRROR:-http://deb.debian.org/debian}"
pip="${PIP:-}"
if [ -z "$pip" ]; then
  pip="$here/.venv/bin/pip"
  [ -x "$pip" ] || pip="python3 -m pip"
fi
constraints="$here/constraints.txt"

die() { echo "arm64_root: $*" >&2; exit 1; }
pin() { grep -iE "^$1==" "$constraints" | head -1 | cut -d= -f3 || true; }

[ "$(id -u)" = 0 ] || die "run as root (chroot and debootstrap need it): sudo $0 $*"
[ "$(uname -m)" = x86_64 ] || die "this builds an emulated root on an x86_64 host; on arm64 run the runtimes natively"

runtimes="onnxruntime==$(pin onnxruntime) ai-edge-litert==$(pin ai-edge-litert) numpy==$(pin numpy)"
pure="flatbuffers==$(pin flatbuffers) packaging==$(pin packaging) protobuf==$(pin protobuf) typing_extensions==$(pin typing_extensions)"
stamp="$root/.edgellm-arm64.json"
want="{\"suite\": \"$suite\", \"wheels\": \"$runtimes $pure\""  # the stamp: this, then the qemu version
if [ -f "$stamp" ] && [ "$(head -c ${#want} "$stamp")" = "$want" ] && [ -x "$root/usr/bin/qemu-aarch64-static" ]; then
  echo "arm64 root up to date: $root"
  exit 0
fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need debootstrap; then
  need apt-get || die "debootstrap is missing and there is no apt-get to install it"
  echo "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/arm64-root.XXXXXX")"
trap 'rm -rf "$work"' EXIT
new="$work/root"  # built aside, moved into place at the end: never a half-made root at $root

echo "debootstrap $suite arm64 (minbase + python3) from $mirror"
debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 "$suite" "$new" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
for deb in "$new"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$new"; done
[ -x "$new/usr/bin/python3.11" ] || die "the root has no /usr/bin/python3.11 after unpacking"

echo "qemu-aarch64-static from qemu-user-static"
(cd "$work" && apt-get download -q qemu-user-static >/dev/null 2>&1) \
  || die "could not download qemu-user-static (apt-get download); install it and rerun"
dpkg -x "$work"/qemu-user-static_*.deb "$work/qemu"
install -m 0755 "$work/qemu/usr/bin/qemu-aarch64-static" "$new/usr/bin/qemu-aarch64-static"

echo "aarch64 wheels: $runtimes"
plat="--platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64"
# shellcheck disable=SC2086  # word splitting of the lists is intended
$pip download -q --no-deps --only-binary=:all: $plat --python-version 3.11 --implementation cp --abi cp311 \
  -d "$work/wheels" $runtimes || die "pip could not download the aarch64 wheels of $runtimes"
# shellcheck disable=SC2086
$pip download -q --no-deps --only-binary=:all: --platform any --python-version 3.11 -d "$work/wheels" $pure \
  || die "pip could not download $pure"
site="$new/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site"
for whl in "$work"/wheels/*.whl; do python3 -m zipfile -e "$whl" "$site"; done

echo "checking the root: chroot $new qemu-aarch64-static python3.11"
chroot "$new" /usr/bin/qemu-aarch64-static -cpu cortex-a76 /usr/bin/python3.11 -c \
  'import platform, numpy, onnxruntime, ai_edge_litert.interpreter; print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)' \
  || die "the runtimes do not import inside the root"
qemu="$("$new/usr/bin/qemu-aarch64-static" --version | head -1 | awk '{print $3}')"
echo "$want, \"qemu\": \"$qemu\"}" >"$new/.edgellm-arm64.json"
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$new" "$root"
echo "arm64 root ready: $root"
