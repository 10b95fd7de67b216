#!/usr/bin/env bash
# Boots ROOTFS with systemd-nspawn and boots it again each time the container
# reboots (nspawn exits 133), as a machine would. Started in the background by
# tests/e2e/run.sh; it talks back through files in RUNDIR:
#   nspawn.pid  PID of the current systemd-nspawn (its child is the container's init)
#   restarts    how many times the container was booted again after a reboot
#   exit        nspawn's exit code once the loop has ended
#   stop        created by run.sh: do not boot again (the test is ending)
# SIGTERM stops the loop and forwards SIGTERM to nspawn, which shuts the
# container down cleanly (its --kill-signal defaults to SIGRTMIN+3 with --boot).
set -uo pipefail

rootfs=$1
rundir=$2
machine=$3
console=$rundir/console.log

echo 0 > "$rundir/restarts"
rm -f "$rundir/exit" "$rundir/nspawn.pid"
nspawn=
trap 'touch "$rundir/stop"; [ -n "$nspawn" ] && kill -TERM "$nspawn" 2>/dev/null' TERM INT

boots=0
while :; do
    boots=$((boots + 1))
    echo "=== boot $boots: $(date -u +%FT%TZ)" >> "$console"
    # --keep-unit --register=no: the host's PID 1 is not systemd, so there is
    # no machined or scope unit to register with. No --private-network: the
    # container shares the host's loopback, where the test's git daemon listens.
    systemd-nspawn --keep-unit --register=no --console=read-only \
        --machine="$machine" -D "$rootfs" -b >> "$console" 2>&1 &
    nspawn=$!
    echo "$nspawn" > "$rundir/nspawn.pid"
    # wait returns early (>128) when a trapped signal arrives: wait again for
    # nspawn's own exit code.
    while :; do
        wait "$nspawn"
        rc=$?
        kill -0 "$nspawn" 2>/dev/null || break
    done
    nspawn=
    echo "=== nspawn exited with $rc: $(date -u +%FT%TZ)" >> "$console"
    if [ "$rc" -eq 133 ] && [ ! -e "$rundir/stop" ]; then
        echo $(( $(cat "$rundir/restarts") + 1 )) > "$rundir/restarts"
        continue
    fi
    echo "$rc" > "$rundir/exit"
    exit 0
done
