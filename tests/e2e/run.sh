#!/usr/bin/env bash
# End-to-end test of the Debian package on a real systemd: builds the .deb,
# boots a Debian bookworm container (systemd-nspawn) that follows a real Git
# repository served by `git daemon` on the host's 127.0.0.1, and watches the
# shipped timer do its work with nobody acting:
#   a. the first pass deploys the branch head;
#   b. a commit pushed later is deployed;
#   c. a failing entrypoint marks gitops-run.service failed, a fix recovers it;
#   d. a `reboot-at` request reboots the container exactly once, and later
#      passes never again (the container shares the host's kernel and so its
#      boot time: only the record in state.json prevents a loop).
#
# Run as root: bash tests/e2e/run.sh (or `just e2e`). Needs the network only
# for apt and the first debootstrap; the rootfs is cached in
# target/e2e/rootfs-base (delete it to rebuild). Every run boots a fresh copy.
# E2E_DEB=path/to.deb skips the package build and tests that file instead;
# E2E_KEEP=1 keeps the stopped container's files (target/e2e/rootfs-run) to
# inspect, e.g. journalctl -D target/e2e/rootfs-run/var/log/journal.
set -Eeuo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
top=$PWD
here=$top/tests/e2e

e2e=$top/target/e2e
base=$e2e/rootfs-base
rootfs=$e2e/rootfs-run
run=$e2e/last-run               # logs of the last run: console, git daemon, deb build
machine=gitops-e2e
suite=bookworm
state_dir=/var/lib/gitops-run   # StateDirectory=gitops-run
applied=/var/lib/e2e-applied    # written by the test repository's run.sh

# Time limits of the waits, in seconds.
BOOT_SECS=90
PASS_SECS=60        # first pass: OnBootSec=5s; later ones: OnUnitInactiveSec=10s
REBOOT_SECS=120
AFTER_REBOOT_PASSES=3
AFTER_REBOOT_SECS=120

export LC_ALL=C.UTF-8
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=e2e@example.invalid
export GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=e2e@example.invalid

passed=0
failed=0
step=setup
started=$(date +%s)

say() { printf 'e2e: %s\n' "$*"; }
ok() { passed=$((passed + 1)); say "ok: $*"; }
begin() { step=$1; say "--- $1 (+$(( $(date +%s) - started ))s)"; }

# ---------------------------------------------------------------- the container
init_pid=

# PID of the container's init: the child of the current systemd-nspawn that
# has exec'd systemd. Empty while none is running.
find_init() {
    local np child
    np=$(cat "$run/nspawn.pid" 2>/dev/null) || return 1
    [ -n "$np" ] && kill -0 "$np" 2>/dev/null || return 1
    for child in $(pgrep -P "$np" || true); do
        if [ "$(cat /proc/"$child"/comm 2>/dev/null)" = systemd ]; then
            echo "$child"
            return 0
        fi
    done
    return 1
}

# Run a command inside the container, with a clean environment.
inside() {
    [ -n "$init_pid" ] || return 1
    nsenter -t "$init_pid" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LC_ALL=C.UTF-8 SYSTEMD_COLORS=0 SYSTEMD_PAGER= "$@"
}

container_running() {
    [ -n "$init_pid" ] && [ -d /proc/"$init_pid" ] && [ "$(find_init 2>/dev/null)" = "$init_pid" ]
}

# Wait for the container's systemd to finish booting; sets init_pid.
wait_booted() {
    local deadline=$(( $(date +%s) + BOOT_SECS )) st=
    init_pid=
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if [ -e "$run/exit" ]; then
            fail "systemd-nspawn exited with $(cat "$run/exit") while booting (see $run/console.log)"
        fi
        if [ -z "$init_pid" ]; then
            init_pid=$(find_init) || init_pid=
        fi
        if [ -n "$init_pid" ]; then
            st=$(inside systemctl is-system-running 2>/dev/null) || true
            case "$st" in
                running|degraded) return 0 ;;
            esac
        fi
        sleep 1
    done
    fail "the container's systemd did not finish booting in ${BOOT_SECS}s (is-system-running: ${st:-no answer}; see $run/console.log)"
}

status_json() { inside gitops-run status --json; }

# A field of `gitops-run status --json`, as jq prints it raw ("" when absent).
status_field() {
    local doc
    doc=$(status_json 2>/dev/null) || return 1
    jq -r "$1 // \"\"" <<<"$doc"
}

# The journal of gitops-run.service, all boots, messages only. Captured, then
# searched: `journalctl | grep -q` fails under pipefail when grep stops early.
unit_journal() { inside journalctl -u gitops-run.service --no-pager -o cat; }
journal_has() { local j; j=$(unit_journal) && grep -qF -- "$1" <<<"$j"; }

# Poll until COMMAND succeeds, once a second, for at most SECS seconds.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$(( $(date +%s) + secs ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        "$@" && return 0
        sleep 1
    done
    fail "timed out after ${secs}s waiting until $what"
}

# ---------------------------------------------------------------- failure and cleanup
fail() {
    failed=$((failed + 1))
    say "FAILED at step $step: $*"
    if container_running; then
        echo "--- last 50 journal lines of gitops-run.service:"
        inside journalctl -u gitops-run.service --no-pager -n 50 2>&1 || true
        echo "--- gitops-run status:"
        inside gitops-run status 2>&1 || true
    elif [ -d "$rootfs/var/log/journal" ]; then
        echo "--- last 50 journal lines of gitops-run.service (read from the stopped container's files):"
        journalctl -D "$rootfs/var/log/journal" -u gitops-run.service --no-pager -n 50 2>&1 || true
        echo "--- last 20 lines of $run/console.log:"
        tail -n 20 "$run/console.log" 2>/dev/null || true
    fi
    exit 1   # cleanup prints the summary line
}

on_error() {
    local rc=$? line=$1 cmd=$2
    if [ "$BASHPID" != "$$" ]; then
        # In a command substitution: say what failed; the caller's line fails next.
        echo "e2e: command failed with exit code $rc at tests/e2e/run.sh:$line: $cmd" >&2
        exit "$rc"
    fi
    trap - ERR
    fail "command failed with exit code $rc at tests/e2e/run.sh:$line: $cmd"
}
trap 'on_error $LINENO "$BASH_COMMAND"' ERR

loop_pid=
daemon_pid=
mounted_nspawn_dir=0

cleanup() {
    local rc=$? np t0
    trap - ERR
    set +e
    t0=$(date +%s)
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then   # a signal, or an exit before the steps
        failed=1
        say "FAILED at step $step: stopped with exit code $rc"
    fi
    if [ -n "$loop_pid" ]; then
        touch "$run/stop"
        np=$(cat "$run/nspawn.pid" 2>/dev/null)
        # A clean shutdown first (the journal is flushed), then signals: the
        # loop forwards SIGTERM to nspawn, which powers the container off.
        init_pid=$(find_init) || init_pid=
        if [ -n "$init_pid" ]; then
            timeout 10 nsenter -t "$init_pid" -a systemctl poweroff >/dev/null 2>&1
            for _ in $(seq 1 20); do kill -0 "$loop_pid" 2>/dev/null || break; sleep 1; done
        fi
        if kill -0 "$loop_pid" 2>/dev/null; then
            kill -TERM "$loop_pid" 2>/dev/null
            for _ in $(seq 1 15); do kill -0 "$loop_pid" 2>/dev/null || break; sleep 1; done
        fi
        if kill -0 "$loop_pid" 2>/dev/null; then
            [ -n "$np" ] && kill -KILL "$np" 2>/dev/null
            kill -KILL "$loop_pid" 2>/dev/null
        fi
        wait "$loop_pid" 2>/dev/null
    fi
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    if [ "$mounted_nspawn_dir" = 1 ]; then
        umount /run/systemd/nspawn 2>/dev/null
    fi
    if [ -n "${E2E_KEEP:-}" ]; then
        say "kept the container's files in $rootfs (E2E_KEEP)"
    else
        remove_rootfs
    fi
    say "cleaned up in $(( $(date +%s) - t0 ))s"
    # The closing line, last of all: 'N passed, N failed'.
    say "$passed passed, $failed failed"
    exit "$rc"
}

remove_rootfs() {
    local pid
    [ -e "$rootfs" ] || return 0
    # A run that was killed may have left its container running: never delete
    # a rootfs in use (its mounts live in nspawn's namespace, not in ours).
    if pid=$(pgrep -f -- "-D $rootfs( |$)"); then
        say "warning: systemd-nspawn $pid still runs on $rootfs; not removing it"
        return 1
    fi
    if grep -q " ${rootfs}[/ ]" /proc/self/mounts; then
        say "warning: $rootfs still has mounts; not removing it"
        return 1
    fi
    rm -rf --one-file-system "$rootfs"
}

# ---------------------------------------------------------------- steps
[ "$(id -u)" -eq 0 ] || { echo "tests/e2e/run.sh: run as root (it boots a container)" >&2; exit 1; }
mkdir -p "$e2e"
# One run at a time: the runs share the rootfs cache and target/e2e.
exec 9> "$e2e/lock"
flock -n 9 || { echo "tests/e2e/run.sh: another e2e run holds $e2e/lock" >&2; exit 1; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
rm -rf "$run"
mkdir -p "$run"
remove_rootfs || fail "cannot remove $rootfs, left by an earlier run (see the warning above)"

# The Debian mirror apt already uses for $suite (deb822 .sources or one-line .list).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "" && enabled != "no") {
                    split(uris, u, " "); print u[1]; done = 1; exit
                }
                types = suites = uris = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            { key = tolower($1); $1 = ""; sub(/^ +/, "") }
            key == "types:" { types = $0 }
            key == "uris:" { uris = $0 }
            key == "suites:" { suites = $0 }
            key == "enabled:" { enabled = tolower($0) }
            END { if (!done) flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f"
    done
}

begin install-tools
need=()
[ "$(dpkg-query -W -f='${Status}' systemd-container 2>/dev/null)" = "install ok installed" ] || need+=("systemd-container=$(dpkg-query -W -f='${Version}' systemd)")
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v jq >/dev/null || need+=(jq)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}" > "$run/apt.log" 2>&1 \
        || { tail -n 20 "$run/apt.log"; fail "apt-get install ${need[*]} failed"; }
fi
for tool in systemd-nspawn debootstrap jq nsenter git python3; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
ok "tools: systemd-nspawn $(systemd-nspawn --version | awk 'NR==1{print $2}'), debootstrap, git daemon"

begin build-deb
if [ -n "${E2E_DEB:-}" ]; then
    deb=$E2E_DEB
else
    t0=$(date +%s)
    # The e2e profile: optimised, without the slow whole-program LTO of releases.
    if ! deb=$(bash docs/debian/build-deb.sh e2e 2> "$run/deb-build.log"); then
        tail -n 30 "$run/deb-build.log"
        fail "building the package failed (log: $run/deb-build.log)"
    fi
    say "built $deb in $(( $(date +%s) - t0 ))s"
fi
[ -f "$deb" ] || fail "no package at $deb"
ok "package $(basename "$deb")"
started=$(date +%s)   # the time limits below exclude the release build

begin rootfs
if [ ! -e "$base/.e2e-complete" ]; then
    mirror=$(apt_mirror | head -n 1)
    [ -n "$mirror" ] || fail "found no Debian mirror for $suite in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    say "debootstrap $suite from $mirror into $base (about a minute; cached for later runs)"
    rm -rf --one-file-system "$base" "$base.tmp"
    timeout 900 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
        "$suite" "$base.tmp" "$mirror" > "$run/debootstrap.log" 2>&1 \
        || { tail -n 20 "$run/debootstrap.log"; fail "debootstrap failed (log: $run/debootstrap.log)"; }
    touch "$base.tmp/.e2e-complete"
    mv "$base.tmp" "$base"
fi
cp -a "$base" "$rootfs"
rm -f "$rootfs/.e2e-complete"
# A machine id of its own (the base has the one debootstrap made, and dbus's
# copy would be used if /etc/machine-id were empty): journalctl --list-boots
# reads the journal of this id, so it must stay the same across reboots.
tr -d '-' < /proc/sys/kernel/random/uuid > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
echo "$machine" > "$rootfs/etc/hostname"
# Persistent journal, so that boots can be counted after a reboot.
mkdir -p "$rootfs/var/log/journal"
ok "rootfs $(du -sh "$rootfs" | cut -f1) copied from the cache"

begin git-daemon
srv=$run/git
mkdir -p "$srv"
git init -q --bare -b main "$srv/repo.git"
git init -q -b main "$run/clone"
# commit SUBJECT RUN_SH_BODY [reboot-at contents]: a commit with fixed dates
# (one second apart); prints its id. Called in $(...): no global state.
commit() {
    local subject=$1 body=$2 reboot=${3:-} n date
    n=$(( $(git -C "$run/clone" rev-list --count --all) + 1 ))
    date=$(date -u -d "@$(( 1767225600 + n ))" +%Y-%m-%dT%H:%M:%SZ)   # 2026-01-01 + n s
    echo "$subject" > "$run/clone/subject"
    printf '#!/bin/sh\nset -eu\n%s\n' "$body" > "$run/clone/run.sh"
    chmod 755 "$run/clone/run.sh"
    if [ -n "$reboot" ]; then
        printf '# e2e: one reboot\n%s\n' "$reboot" > "$run/clone/reboot-at"
    else
        rm -f "$run/clone/reboot-at"
    fi
    git -C "$run/clone" add -A
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$run/clone" commit -q -m "$subject"
    git -C "$run/clone" push -q "$srv/repo.git" main
    git -C "$run/clone" rev-parse HEAD
}
apply_ok='echo "e2e: applying $GITOPS_COMMIT ($GITOPS_REASON)"
printf "%s %s\n" "$GITOPS_COMMIT" "$GITOPS_REASON" >> '"$applied"
c1=$(commit "first" "$apply_ok")
port=
for _ in 1 2 3; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    git daemon --reuseaddr --base-path="$srv" --export-all --informative-errors --verbose \
        --listen=127.0.0.1 --port="$port" "$srv" >> "$run/git-daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 50); do
        timeout 5 git ls-remote "git://127.0.0.1:$port/repo" >/dev/null 2>&1 && break 2
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null || true
    daemon_pid='' port=''
done
[ -n "$port" ] || fail "git daemon did not start on 127.0.0.1 (log: $run/git-daemon.log)"
repo_url=git://127.0.0.1:$port/repo
ok "git daemon serves $repo_url (head ${c1:0:12})"

begin boot
mkdir -p /run/systemd/nspawn
if ! mountpoint -q /run/systemd/nspawn; then
    mount -t tmpfs tmpfs /run/systemd/nspawn
    mounted_nspawn_dir=1
fi
bash "$here/boot-loop.sh" "$rootfs" "$run" "$machine" &
loop_pid=$!
wait_booted
ok "container booted (init PID $init_pid, $(inside systemctl is-system-running || true))"

begin install-deb
cp "$deb" "$rootfs/var/tmp/gitops-run.deb"   # /tmp inside is nspawn's own tmpfs
inside dpkg -i /var/tmp/gitops-run.deb > "$run/dpkg.log" 2>&1 \
    || { cat "$run/dpkg.log"; fail "dpkg -i failed"; }
[ "$(inside systemctl is-enabled gitops-run.timer 2>&1)" = enabled ] \
    || fail "gitops-run.timer is not enabled after installation: $(inside systemctl is-enabled gitops-run.timer 2>&1)"
timer_state=$(inside systemctl is-active gitops-run.timer 2>&1) || true
[ "$timer_state" = active ] || fail "gitops-run.timer is $timer_state after installation; the package must start it"
# The man page the units point to (Documentation=man:gitops-run(N)) is installed.
for doc in $(inside systemctl show -p Documentation --value gitops-run.service gitops-run.timer); do
    case "$doc" in
        man:*\(*\))
            page=${doc#man:}; section=${page#*(}; section=${section%)}; page=${page%%(*}
            inside sh -c "ls /usr/share/man/man$section/$page.$section*" >/dev/null 2>&1 \
                || fail "the units name $doc, but the package installs no /usr/share/man/man$section/$page.$section*" ;;
    esac
done
ok "package installed; gitops-run.timer enabled and started by the package; $(inside gitops-run --version)"

begin no-config
# Without /etc/gitops-run/config a start is a clean skip, not a failure.
inside systemctl start gitops-run.service || fail "systemctl start gitops-run.service failed without a config"
[ "$(inside systemctl show -p ConditionResult --value gitops-run.service)" = no ] \
    || fail "gitops-run.service ran without /etc/gitops-run/config (ConditionResult is not 'no')"
if inside systemctl is-failed --quiet gitops-run.service; then fail "gitops-run.service failed without a config"; fi
if inside test -e "$state_dir/state.json"; then fail "a pass ran without a config: $state_dir/state.json exists"; fi
ok "without a config the service is skipped, not failed"

begin configure
inside sh -c 'mkdir -p /etc/gitops-run && cat > /etc/gitops-run/config' <<EOF
# written by tests/e2e/run.sh
GITOPS_REPO=$repo_url
EOF
inside sh -c 'mkdir -p /etc/systemd/system/gitops-run.timer.d && cat > /etc/systemd/system/gitops-run.timer.d/e2e.conf' <<'EOF'
# tests/e2e: passes every few seconds instead of every 5 minutes. One empty
# assignment clears ALL the shipped On*Sec= (an empty OnUnitInactiveSec= after
# OnBootSec=5s would clear that too), then the new values follow.
[Timer]
OnBootSec=
OnBootSec=5s
OnUnitInactiveSec=10s
RandomizedDelaySec=0
AccuracySec=1s
EOF
inside systemctl daemon-reload
# The package started the timer; restarting it applies the drop-in's intervals now.
inside systemctl restart gitops-run.timer
timers=$(inside systemctl show -p TimersMonotonic --value gitops-run.timer)
delay=$(inside systemctl show -p RandomizedDelayUSec --value gitops-run.timer)
case "$timers" in
    *OnBootUSec=5min*|*OnUnitInactiveUSec=5min*) fail "the drop-in did not reset the shipped intervals: $timers" ;;
    *"OnBootUSec=5s "*"OnUnitInactiveUSec=10s "*|*"OnUnitInactiveUSec=10s "*"OnBootUSec=5s "*) ;;
    *) fail "the drop-in did not take: TimersMonotonic is $timers" ;;
esac
[ "$delay" = 0 ] || fail "the drop-in did not take: RandomizedDelayUSec is $delay"
ok "configured $repo_url; timer restarted with OnBootSec=5s, OnUnitInactiveSec=10s"

# ---------------------------------------------------------------- a. first pass
deployed_is() { [ "$(status_field .deployed.commit)" = "$1" ]; }
applied_has() { inside grep -qx "$1 $2" "$applied"; }
unit_settled() {
    local s
    s=$(inside systemctl show -p ActiveState --value gitops-run.service) || return 1
    [ "$s" = inactive ] || [ "$s" = failed ]
}

begin first-pass
wait_until "$PASS_SECS" "the timer's first pass deploys ${c1:0:12} (status deployed.commit)" deployed_is "$c1"
applied_has "$c1" initial || fail "$applied lacks '$c1 initial': $(inside cat "$applied" 2>&1)"
journal_has "e2e: applying $c1 (initial)" || fail "the journal of gitops-run.service lacks the entrypoint's output for ${c1:0:12}"
ok "a. the timer's first pass deployed ${c1:0:12} (reason initial), entrypoint output in the journal"

# ---------------------------------------------------------------- b. a new commit
begin new-commit
c2=$(commit "second" "$apply_ok")
wait_until "$PASS_SECS" "the timer deploys the pushed commit ${c2:0:12}" deployed_is "$c2"
applied_has "$c2" new || fail "$applied lacks '$c2 new': $(inside cat "$applied" 2>&1)"
ok "b. a pushed commit ${c2:0:12} was deployed by the timer (reason new)"

# ---------------------------------------------------------------- c. failure and fix
begin failing-commit
c3=$(commit "broken" 'echo "e2e: deliberate failure of $GITOPS_COMMIT"
exit 1')
attempt_failed() {
    [ "$(status_field '.last_attempt.commit + " " + .last_attempt.result')" = "$c3 failed" ]
}
wait_until "$PASS_SECS" "the timer tries ${c3:0:12} and records it failed (status last_attempt)" attempt_failed
is_failed() { [ "$(inside systemctl is-failed gitops-run.service)" = failed ]; }
wait_until 20 "systemctl is-failed gitops-run.service prints failed" is_failed
deployed_is "$c2" || fail "a failed commit changed the deployed commit to $(status_field .deployed.commit)"
journal_has "e2e: deliberate failure of $c3" || fail "the journal lacks the failing entrypoint's output"
[ "$(status_field .consecutive_failures)" -ge 1 ] || fail "status shows no consecutive failure"
ok "c. a failing entrypoint marks gitops-run.service failed; ${c2:0:12} stays deployed; output in the journal"

begin fix-commit
c4=$(commit "fix" "$apply_ok")
# The fix is a newer commit: applied at once, not after the 5-minute retry backoff.
wait_until "$PASS_SECS" "the timer deploys the fix ${c4:0:12}" deployed_is "$c4"
wait_until 20 "gitops-run.service is no longer running" unit_settled
unit_now=$(inside systemctl is-failed gitops-run.service) || true
[ "$unit_now" != failed ] || fail "gitops-run.service is still failed after the fix was deployed"
applied_has "$c4" new || fail "$applied lacks '$c4 new'"
[ "$(status_field .consecutive_failures)" = 0 ] || fail "status still shows failures after the fix"
ok "c. the fix ${c4:0:12} recovered the unit ($unit_now, no failures recorded)"

# ---------------------------------------------------------------- d. reboot once
begin reboot
# The container's boot time is the host kernel's: pick a time after it and a
# little in the past, so the first pass that deploys the request reboots.
now=$(inside date -u +%s)
btime=$(inside awk '$1 == "btime" { print $2 }' /proc/stat)
at=$(( now - 30 > btime + 1 ? now - 30 : btime + 1 ))
at_text=$(date -u -d "@$at" +%Y-%m-%dT%H:%M:%SZ)
boot_id_before=$(inside cat /proc/sys/kernel/random/boot_id)
c5=$(commit "reboot at $at_text" "$apply_ok" "$at_text")
say "pushed ${c5:0:12} with reboot-at $at_text (kernel btime $(date -u -d "@$btime" +%FT%TZ))"
rebooted() { [ "$(cat "$run/restarts")" -ge 1 ]; }
wait_until "$REBOOT_SECS" "the container reboots (systemd-nspawn exits 133)" rebooted
wait_booted
[ "$(inside cat /proc/sys/kernel/random/boot_id)" != "$boot_id_before" ] || fail "the boot id did not change"
deployed_is "$c5" || fail "after the reboot, deployed is $(status_field .deployed.commit), not ${c5:0:12}"
ok "d. the request in ${c5:0:12} rebooted the container"

begin no-second-reboot
# Passes of the new boot: each has a later last_pass.started_at.
seen=$(status_field .last_pass.started_at)
passes=0
more_passes() {
    local s
    [ "$(cat "$run/restarts")" = 1 ] || fail "the container rebooted again: systemd-nspawn was restarted $(cat "$run/restarts") times"
    s=$(status_field .last_pass.started_at) || return 1
    if [ -n "$s" ] && [ "$s" != "$seen" ]; then
        seen=$s
        passes=$((passes + 1))
        say "pass $passes after the reboot at $s: $(status_field '.last_pass.outcome + ", exit " + (.last_pass.exit_code | tostring) + ", reboot " + .reboot.status')"
    fi
    [ "$passes" -ge "$AFTER_REBOOT_PASSES" ]
}
wait_until "$AFTER_REBOOT_SECS" "$AFTER_REBOOT_PASSES passes after the reboot" more_passes
wait_until 20 "gitops-run.service is no longer running" unit_settled
sleep 3   # a reboot command would have run right after the state was written
container_running || fail "the container is not running after $passes passes (rebooted again?)"
[ "$(cat "$run/restarts")" = 1 ] || fail "systemd-nspawn was restarted $(cat "$run/restarts") times, not once"
boots=$(inside journalctl --list-boots --no-pager | grep -cE '[0-9a-f]{32}') || true
[ "$boots" = 2 ] || fail "journalctl --list-boots lists $boots boots, not 2: $(inside journalctl --list-boots --no-pager 2>&1)"
[ "$(status_field .reboot.status)" = "done" ] || fail "reboot status is $(status_field .reboot.status), not done"
[ "$(status_field '.reboots_done | join(" ")')" = "$at_text" ] \
    || fail "reboots_done is $(status_field '.reboots_done | join(" ")'), not $at_text"
[ "$(status_field .last_pass.exit_code)" = 0 ] || fail "the last pass exited $(status_field .last_pass.exit_code)"
journal=$(unit_journal)
runs=$(grep -c 'running reboot command' <<<"$journal") || true
[ "$runs" = 1 ] || fail "the journal shows the reboot command run $runs times"
# The rebooting pass was stopped by the shutdown; that must not count as a failure.
# (Only the lines after the reboot command: step c failed the unit on purpose.)
prev_boot=$(inside journalctl -b -1 -u gitops-run.service --no-pager -o cat 2>&1) || true
after_reboot_cmd=$(sed -n '/running reboot command/,$p' <<<"$prev_boot")
[ -n "$after_reboot_cmd" ] || fail "the previous boot's journal does not show the reboot command"
if grep -q "Failed with result" <<<"$after_reboot_cmd"; then
    fail "the rebooting pass left gitops-run.service failed: $(grep 'Failed with result' <<<"$after_reboot_cmd" | tail -1)"
fi
c5_applied=$(inside grep -c "^$c5 " "$applied") || true
[ "$c5_applied" = 1 ] || fail "the entrypoint of ${c5:0:12} ran $c5_applied times"
ok "d. $passes more passes, no second reboot: 2 boots, 1 restart, reboot status done"

step=cleanup
say "all steps passed in $(( $(date +%s) - started ))s (without the package build)"
