#!/bin/bash
# `make arm64-check` (not in CI; 15-30 min): the README's build-from-source and .deb steps on
# emulated arm64 Debian bookworm (a Raspberry Pi OS 64-bit stand-in), then the installed relay's
# demo answers a real ONVIF client (onvif-zeep-async from .venv) from outside the root.
#
# Needs root, debootstrap and qemu-user-static (installed from apt when missing). The root is
# kept in $ARM64_ROOT (build/arm64-root) for the next run; `rm -rf` it for a fresh one.
# Every step's time goes to the log (build/arm64-check.log); packaging/arm64.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ARM64_ROOT:-build/arm64-root}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SRC=/root/atomrelay
mkdir -p build
exec > >(tee build/arm64-check.log) 2>&1

step() { printf '\n== %s [%ds since start]\n' "$*" "$SECONDS"; }
# A host whose HTTPS goes through its own CA (PIP_CERT) lends that CA to pip in the root.
pip_cert=()
if [ -n "${PIP_CERT:-}" ]; then
    pip_cert=(PIP_CERT=/etc/ssl/host-ca.crt)
fi
in_root() {
    chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "${pip_cert[@]}" "$@"
}

step "host tools: debootstrap, qemu-user-static, binfmt_misc"
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
make --no-print-directory venv >/dev/null   # the ONVIF client, outside the root

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    step "debootstrap --arch=arm64 --variant=minbase bookworm"
    rm -rf "$ROOT"
    debootstrap --arch=arm64 --variant=minbase bookworm "$ROOT" "$MIRROR" >/dev/null
fi
in_root uname -m
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
[ -z "${PIP_CERT:-}" ] || cp "$PIP_CERT" "$ROOT/etc/ssl/host-ca.crt"
demo=""
cleanup() {
    [ -z "$demo" ] || kill "$demo" 2>/dev/null || true
    for mount in dev/pts dev sys proc; do umount -l "$ROOT/$mount" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"

# The README's own line (Install > Build the .deb yourself), without sudo: the root is root.
packages=$(grep -m1 -o 'sudo apt-get install git make [^`]*' README.md | sed 's/^sudo //')
step "README: $packages"
in_root sh -c "apt-get update -qq && $packages -y -qq >/dev/null"

step "git clone (this checkout's HEAD) into $SRC"
rm -rf "$ROOT$SRC"
git clone -q . "$ROOT$SRC"

step "README: make deb (venv from the hashed lock, PyInstaller, dpkg-deb)"
in_root sh -c "cd $SRC && make deb"

step "README: apt install ./dist/atomrelay_<version>_arm64.deb"
in_root sh -c "cd $SRC && apt-get install -y -qq ./dist/atomrelay_*_arm64.deb"
in_root atomrelay --version
echo "glibc the bundle needs: $(in_root sh -c "find /opt/atomrelay -type f \( -name '*.so*' -o -name atomrelay \) \
    -exec objdump -T {} + 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1")"
echo "bundle: $(du -sh "$ROOT/opt/atomrelay" | cut -f1), .deb: $(du -h "$ROOT$SRC"/dist/atomrelay_*_arm64.deb | cut -f1)"

step "the installed relay's demo, asked by onvif-zeep-async from outside the root"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
in_root /usr/bin/atomrelay demo --port "$port" > build/arm64-demo.log 2>&1 &
demo=$!
.venv/bin/python packaging/onvif_probe.py "$port" admin admin 180
kill "$demo"
wait "$demo" || true
demo=""

step "arm64-check passed"
