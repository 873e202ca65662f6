#!/usr/bin/env bash
# run-qemu.sh NAME [extra qemu args...]
#
# Boots the guest kernel NAME (target/x86_64-unknown-none/release/NAME, or a
# path) under QEMU TCG with -cpu max, 256 MiB, isa-debug-exit at 0xf4 and
# COM1 on stdout, and exits 0 only if the guest printed a final PASS line and
# QEMU exited with status 33 (guest wrote 0x10 to port 0xf4).
#
# Environment: SMP (default 2), MEM (default 256), CPU (default max),
# ACCEL (default tcg), TIMEOUT seconds (default 60), QEMU (binary),
# PROFILE (release|debug, default release), APPEND (kernel command line).
# Kernel-specific devices (pc-testdev, pci-testdev) are added automatically
# for the kernels that use them; extra arguments are passed through.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
name=$1; shift
case "$name" in
    */*) elf=$name; name=$(basename "$name") ;;
    *) elf=$here/target/x86_64-unknown-none/${PROFILE:-release}/$name ;;
esac
if [ ! -f "$elf" ]; then
    echo "run-qemu.sh: $elf not found (run 'cargo build --release' in $here)" >&2
    exit 2
fi

devices=()
case "$name" in
    testdev) devices=(-device pc-testdev) ;;
    pci) devices=(-device pci-testdev) ;;
esac

out=$(mktemp /tmp/turtles-guest.XXXXXX)
timeout "${TIMEOUT:-60}" "${QEMU:-qemu-system-x86_64}" \
    -accel "${ACCEL:-tcg}" -cpu "${CPU:-max}" -m "${MEM:-256}" -smp "${SMP:-2}" \
    -display none -nodefaults -monitor none -serial stdio -no-reboot \
    -device isa-debug-exit,iobase=0xf4,iosize=0x4 \
    "${devices[@]}" \
    -kernel "$elf" -append "${APPEND:-}" "$@" </dev/null | tee "$out"
rc=${PIPESTATUS[0]}
last=$(grep -E '^(PASS|FAIL) ' "$out" | tail -n 1)
rm -f "$out"
if [ "$rc" -eq 33 ] && [[ "$last" == PASS* ]]; then
    echo "run-qemu.sh: $name ok (status 33)"
    exit 0
fi
echo "run-qemu.sh: $name FAILED (status $rc, last: ${last:-none})" >&2
exit 1
