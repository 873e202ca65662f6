#!/usr/bin/env bash
# Runs the reference benchmark guests of ../shared/bench under Turtles,
# QEMU TCG and Bochs in one go and prints the comparison table
# (../shared/bench/summarize.py). Turtles' runs print RESULT lines in the
# format of run-qemu.sh so that one summary covers all three.
#
# usage: scripts/bench-compare.sh [RUNS]     (default 3; Bochs runs once)
# needs: a release build of turtles (cargo build --release), and for the
# comparison qemu-system-x86 and bochs (apt-get install qemu-system-x86
# bochs bochsbios vgabios bochs-term); missing emulators are skipped.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared/bench}
runs=${1:-3}
turtles=$here/target/release/turtles
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Bochs boots flat images built by the shared Makefile; build them in a
# copy so ../shared stays untouched.
cp -r "$shared" "$work/bench"
out=$work/results.txt
wls="boot alu mem mem4k cpuid pio"

for wl in $wls; do
    for r in $(seq 1 "$runs"); do
        start=$(date +%s.%N)
        line=$("$turtles" run -m 256M "$shared/guests/build/$wl.elf" 2>/dev/null | grep '^BENCH')
        status=$?
        end=$(date +%s.%N)
        wall=$(echo "$end - $start" | bc)
        fields=${line#BENCH }
        st=ok; [ $status -eq 0 ] || st=fail
        echo "RESULT emu=turtles wl=$wl run=$r wall_s=$wall cpu_s=$wall status=$st $fields" >> "$out"
    done
done
if command -v qemu-system-x86_64 >/dev/null; then
    for wl in $wls; do RUNS=$runs "$work/bench/run-qemu.sh" "$wl" | grep '^RESULT' >> "$out"; done
fi
if command -v bochs >/dev/null && make -s -C "$work/bench/guests" >/dev/null 2>&1; then
    for wl in $wls; do RUNS=1 TIMEOUT=900 "$work/bench/run-bochs.sh" "$wl" | grep '^RESULT' >> "$out"; done
fi
python3 "$shared/summarize.py" "$out"
