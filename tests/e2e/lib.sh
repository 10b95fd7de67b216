# The container machinery of the end-to-end test, shared by tests/e2e/run.sh
# and bench/push-latency.sh: build the .deb, copy a cached Debian rootfs,
# serve a Git repository with `git daemon` on 127.0.0.1, boot the rootfs with
# systemd-nspawn (tests/e2e/boot-loop.sh), run commands inside, wait on
# conditions, and clean everything up on exit.
#
# Sourced, not run. Before sourcing, the caller sets:
#   top        the repository's top directory
#   e2e_name   the prefix of every message ("e2e", "push-latency")
#   e2e_run    directory for this run's logs, git daemon and clone
#              (removed and made again by e2e_start)
# then calls e2e_start, and the setup steps it needs, in this order:
#   step_install_tools, step_build_deb, step_rootfs, step_git_daemon,
#   step_boot, step_install_deb.
# Messages: say, ok (counts a pass), begin (names the step), fail_soft (a
# failed check after which the run goes on), fail (ends the
# run with the step's name and the unit's last journal lines). The closing
# line is always "<e2e_name>: N passed, N failed".

here=$top/tests/e2e
e2e=$top/target/e2e
base=$e2e/rootfs-base
rootfs=$e2e/rootfs-run
run=$e2e_run
machine=gitops-e2e
suite=bookworm
state_dir=/var/lib/gitops-run   # StateDirectory=gitops-run
# What the cached rootfs is made of; the cache is rebuilt when this changes.
# openssh-server: a host's SSH host key is what decrypts its secrets
# (docs/secrets.md); the server itself stays masked (see step_rootfs).
rootfs_packages=systemd,systemd-sysv,dbus,ca-certificates,openssh-server

# Time limits of the waits, in seconds.
BOOT_SECS=90
PASS_SECS=60        # first pass: OnBootSec=5s; later ones: OnUnitInactiveSec=5s

export LC_ALL=C.UTF-8
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=e2e@example.invalid
export GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=e2e@example.invalid

passed=0
failed=0
step=setup
started=$(date +%s)

say() { printf '%s: %s\n' "$e2e_name" "$*"; }
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

# Write stdin to FILE inside the container, atomically (a pass never reads
# half of it), with MODE.
put_inside() {
    local file=$1 mode=$2
    inside sh -c 'set -e; umask 077; mkdir -p "$(dirname "$1")"; cat > "$1.e2e-tmp"; chmod "$2" "$1.e2e-tmp"; mv -f "$1.e2e-tmp" "$1"' \
        put "$file" "$mode"
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

deployed_is() { [ "$(status_field .deployed.commit)" = "$1" ]; }
unit_settled() {
    local s
    s=$(inside systemctl show -p ActiveState --value gitops-run.service) || return 1
    [ "$s" = inactive ] || [ "$s" = failed ]
}

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

# The same, polling every 0.1 s (for waits whose length is printed).
wait_until_fast() {
    local secs=$1 what=$2
    shift 2
    local deadline=$(( $(date +%s) + secs ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        "$@" && return 0
        sleep 0.1
    done
    fail "timed out after ${secs}s waiting until $what"
}

# A TCP port on 127.0.0.1 that nothing listens on now (the container shares
# the host's loopback).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Can a listener bind PORT? (SO_REUSEADDR, as systemd's sockets: connections
# of an earlier run left in TIME_WAIT do not count.)
port_free() {
    python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()' "$1" 2>/dev/null
}

# ---------------------------------------------------------------- failure and cleanup
fail() {
    failed=$((failed + 1))
    say "FAILED at step $step: $*"
    if container_running; then
        echo "--- last 50 journal lines of gitops-run.service:"
        inside journalctl -u gitops-run.service --no-pager -n 50 2>&1 || true
        case $step in
            receiver*)
                echo "--- last 30 journal lines of the receiver's units:"
                inside journalctl -u gitops-run-receiver.socket -u gitops-run-receiver.service \
                    -u gitops-run-trigger.path --no-pager -n 30 2>&1 || true
                ;;
        esac
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

# A failed check after which the run goes on, because it leaves the container
# as the later steps expect: counted and reported; the run exits 1 at its end.
fail_soft() {
    failed=$((failed + 1))
    say "FAILED at step $step: $*"
}

on_error() {
    local rc=$? file=${1#"$top"/} line=$2 cmd=$3
    if [ "$BASHPID" != "$$" ]; then
        # In a command substitution: say what failed; the caller's line fails next.
        echo "$e2e_name: command failed with exit code $rc at $file:$line: $cmd" >&2
        exit "$rc"
    fi
    trap - ERR
    fail "command failed with exit code $rc at $file:$line: $cmd"
}

loop_pid=
daemon_pid=
mounted_nspawn_dir=0
# Files and directories on the host to remove at the end (key material).
scratch=()

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
    [ ${#scratch[@]} -eq 0 ] || rm -rf "${scratch[@]}"
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

# Root check, the lock (one run at a time: runs share the rootfs cache and
# target/e2e), the traps, a fresh log directory.
e2e_start() {
    [ "$(id -u)" -eq 0 ] || { echo "$e2e_name: run as root (it boots a container)" >&2; exit 1; }
    mkdir -p "$e2e"
    exec 9> "$e2e/lock"
    flock -n 9 || { echo "$e2e_name: another run holds $e2e/lock" >&2; exit 1; }
    trap 'on_error "${BASH_SOURCE[0]}" $LINENO "$BASH_COMMAND"' ERR
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    rm -rf "$run"
    mkdir -p "$run"
    remove_rootfs || fail "cannot remove $rootfs, left by an earlier run (see the warning above)"
}

# ---------------------------------------------------------------- setup steps
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

# Host tools: systemd-nspawn (pinned to the host's systemd), debootstrap, jq,
# nsenter, and the TOOLs named (curl, openssl, age, age-keygen, ssh-keygen) are installed
# when missing; git and python3 are expected.
step_install_tools() {
    local need=() tool
    begin install-tools
    [ "$(dpkg-query -W -f='${Status}' systemd-container 2>/dev/null)" = "install ok installed" ] || need+=("systemd-container=$(dpkg-query -W -f='${Version}' systemd)")
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v jq >/dev/null || need+=(jq)
    command -v nsenter >/dev/null || need+=(util-linux)
    for tool in "$@"; do
        command -v "$tool" >/dev/null && continue
        case "$tool" in
            age-keygen) need+=(age) ;;
            ssh-keygen) need+=(openssh-client) ;;
            *) need+=("$tool") ;;
        esac
    done
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}" > "$run/apt.log" 2>&1 \
            || { tail -n 20 "$run/apt.log"; fail "apt-get install ${need[*]} failed"; }
    fi
    for tool in systemd-nspawn debootstrap jq nsenter git python3 "$@"; do
        command -v "$tool" >/dev/null || fail "$tool is missing"
    done
    ok "tools: systemd-nspawn $(systemd-nspawn --version | awk 'NR==1{print $2}'), debootstrap, git daemon${*:+, $*}"
}

# Sets deb: the package under test (E2E_DEB, or built with the e2e profile).
step_build_deb() {
    local t0
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
}

# A fresh copy of the cached rootfs in $rootfs (debootstrap when the cache is
# missing or was made from another package list).
step_rootfs() {
    local mirror
    begin rootfs
    if [ "$(cat "$base/.e2e-complete" 2>/dev/null)" != "$rootfs_packages" ]; then
        mirror=$(apt_mirror | head -n 1)
        [ -n "$mirror" ] || fail "found no Debian mirror for $suite in /etc/apt/sources.list or /etc/apt/sources.list.d/"
        say "debootstrap $suite ($rootfs_packages) from $mirror into $base (about a minute; cached for later runs)"
        rm -rf --one-file-system "$base" "$base.tmp"
        timeout 900 debootstrap --variant=minbase --include="$rootfs_packages" \
            "$suite" "$base.tmp" "$mirror" > "$run/debootstrap.log" 2>&1 \
            || { tail -n 20 "$run/debootstrap.log"; fail "debootstrap failed (log: $run/debootstrap.log)"; }
        # Like an image: no host key of its own (each container makes one at
        # boot, see step_boot), and no sshd, which would listen on the host's
        # own network (the container shares it).
        rm -f "$base.tmp"/etc/ssh/ssh_host_*
        ln -sf /dev/null "$base.tmp/etc/systemd/system/ssh.service"
        ln -sf /dev/null "$base.tmp/etc/systemd/system/ssh.socket"
        printf '%s' "$rootfs_packages" > "$base.tmp/.e2e-complete"
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
}

# commit SUBJECT RUN_SH_BODY [reboot-at contents]: commits everything in the
# clone, with run.sh (and reboot-at, or none) in the directory $home names
# ("" for the top, "hosts/NAME/" for a fleet host), with fixed dates (one
# second apart), pushes it and prints its id. Other files are written into
# $run/clone by the caller beforehand. Called in $(...): no global state.
home=
commit() {
    local subject=$1 body=$2 reboot=${3:-} n date
    n=$(( $(git -C "$run/clone" rev-list --count --all) + 1 ))
    date=$(date -u -d "@$(( 1767225600 + n ))" +%Y-%m-%dT%H:%M:%SZ)   # 2026-01-01 + n s
    mkdir -p "$run/clone/$home"
    echo "$subject" > "$run/clone/subject"
    printf '#!/bin/sh\nset -eu\n%s\n' "$body" > "$run/clone/${home}run.sh"
    chmod 755 "$run/clone/${home}run.sh"
    if [ -n "$reboot" ]; then
        printf '# e2e: one reboot\n%s\n' "$reboot" > "$run/clone/${home}reboot-at"
    else
        rm -f "$run/clone/${home}reboot-at"
    fi
    git -C "$run/clone" add -A
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$run/clone" commit -q -m "$subject"
    git -C "$run/clone" push -q "$srv/repo.git" main
    git -C "$run/clone" rev-parse HEAD
}

# A bare repository served by `git daemon` on 127.0.0.1: sets srv, repo_url.
# The caller commits the first commit ($run/clone is ready).
step_git_daemon() {
    local port=
    begin git-daemon
    srv=$run/git
    mkdir -p "$srv"
    git init -q --bare -b main "$srv/repo.git"
    git init -q -b main "$run/clone"
    for _ in 1 2 3; do
        port=$(free_port)
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
    ok "git daemon serves $repo_url"
}

# Boots the container (tests/e2e/boot-loop.sh boots it again after each
# reboot) and gives it its SSH host keys, as a host's first boot would.
step_boot() {
    begin boot
    mkdir -p /run/systemd/nspawn
    if ! mountpoint -q /run/systemd/nspawn; then
        mount -t tmpfs tmpfs /run/systemd/nspawn
        mounted_nspawn_dir=1
    fi
    bash "$here/boot-loop.sh" "$rootfs" "$run" "$machine" &
    loop_pid=$!
    wait_booted
    inside ssh-keygen -A > /dev/null
    inside test -s /etc/ssh/ssh_host_ed25519_key || fail "ssh-keygen -A made no /etc/ssh/ssh_host_ed25519_key"
    ok "container booted (init PID $init_pid, $(inside systemctl is-system-running || true)), SSH host keys generated"
}

# Installs $deb with dpkg inside the container.
step_install_deb() {
    begin install-deb
    cp "$deb" "$rootfs/var/tmp/gitops-run.deb"   # /tmp inside is nspawn's own tmpfs
    inside dpkg -i /var/tmp/gitops-run.deb > "$run/dpkg.log" 2>&1 \
        || { cat "$run/dpkg.log"; fail "dpkg -i failed"; }
}

# ---------------------------------------------------------------- the push receiver
receiver_port=9419     # ListenStream= of the shipped gitops-run-receiver.socket
receiver_secret=

# Sets up the receiver as docs/receive.md says: the secret in
# /etc/gitops-run/receiver-secret, then `systemctl enable --now` of the socket
# and the path unit. When something on the host already listens on the
# shipped port (the container shares the host's loopback), a drop-in moves
# the socket, as docs/receive.md shows for another address.
receiver_setup() {
    receiver_secret=$(openssl rand -hex 32)
    printf '%s\n' "$receiver_secret" | put_inside /etc/gitops-run/receiver-secret 0600
    if ! port_free "$receiver_port"; then
        receiver_port=$(free_port)
        say "127.0.0.1:9419 is taken on this machine; moving the socket to $receiver_port with a drop-in"
        printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$receiver_port" \
            | put_inside /etc/systemd/system/gitops-run-receiver.socket.d/e2e-port.conf 0644
        inside systemctl daemon-reload
    fi
    inside systemctl enable --now gitops-run-receiver.socket gitops-run-trigger.path 2> "$run/receiver-enable.log" \
        || { cat "$run/receiver-enable.log"; fail "systemctl enable --now gitops-run-receiver.socket gitops-run-trigger.path failed"; }
}

# A GitHub push event for COMMIT on main, as the forge shapes it (the fields
# the receiver reads, and some it must ignore).
push_event() {
    local before=$1 after=$2
    jq -cn --arg before "$before" --arg after "$after" --arg url "$repo_url" '{
        ref: "refs/heads/main", before: $before, after: $after,
        repository: {full_name: "e2e/repo", clone_url: $url, default_branch: "main"},
        pusher: {name: "e2e", email: "e2e@example.invalid"},
        head_commit: {id: $after, message: "e2e push"}
    }'
}

# HMAC-SHA256 of BODY with SECRET, hex: X-Hub-Signature-256's value after "sha256=".
hmac_hex() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" | awk '{print $NF}'; }

# post_hook BODY [SIGNATURE_HEADER]: POST BODY to the receiver as GitHub would;
# prints "STATUS BODY" of the answer.
post_hook() {
    local body=$1 args=()
    [ $# -lt 2 ] || args=(-H "$2")
    curl -sS --max-time 15 -o "$run/hook-answer" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
        -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" \
        "${args[@]}" --data-binary "$body" "http://127.0.0.1:$receiver_port/gitops-run"
    printf ' %s' "$(cat "$run/hook-answer")"
}
