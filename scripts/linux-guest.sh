#!/usr/bin/env bash
# Fetches Debian's stock cloud kernel and static busybox with apt-get
# download (Debian's own packages, no custom build) and builds a cpio newc
# initramfs whose /init reports the kernel version, the CPU flags, the
# clocksource and dmesg error/warning lines, then powers off (ACPI S5).
#
# usage: scripts/linux-guest.sh [OUT_DIR]     (default: target/linux)
# prints two lines: KERNEL=<path> and INITRD=<path>
# Downloads are cached in OUT_DIR; a second run does no network access.
set -euo pipefail
out=${1:-target/linux}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cpio || ! need dpkg-deb; then
    echo "linux-guest.sh: needs cpio and dpkg-deb (apt-get install cpio dpkg)" >&2
    exit 1
fi

if ! ls linux-image-*.deb >/dev/null 2>&1; then
    # The meta package names the current versioned image package.
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    apt-get download -qq "$pkg" 2>/dev/null
fi
if ! ls busybox-static_*.deb >/dev/null 2>&1; then
    apt-get download -qq busybox-static 2>/dev/null
fi

if [ ! -d root ]; then
    rm -rf root.tmp
    for deb in linux-image-*.deb busybox-static_*.deb; do dpkg-deb -x "$deb" root.tmp; done
    mv root.tmp root
fi
kernel=$(ls "$out"/root/boot/vmlinuz-* | head -n 1)

# Built in a private directory and renamed into place, so concurrent runs
# (a test and a benchmark) never see a half-written initramfs.
stage=$(mktemp -d "$out/initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/proc" "$stage/sys" "$stage/dev"
cp root/bin/busybox "$stage/bin/busybox"
cat > "$stage/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s /bin
echo "TURTLES-INIT: kernel $(uname -r)"
grep -m1 '^flags' /proc/cpuinfo
echo "TURTLES-INIT: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
dmesg | grep -iE 'error|warn' | sed 's/^/TURTLES-DMESG: /'
echo "TURTLES-INIT: done"
if [ -z "$TURTLES_SHELL" ] && ! grep -q turtles.shell /proc/cmdline; then
    poweroff -f
fi
exec sh
INIT
chmod +x "$stage/init"
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 > "$stage.img"
mv -f "$stage.img" initrd.img
echo "KERNEL=$kernel"
echo "INITRD=$out/initrd.img"
