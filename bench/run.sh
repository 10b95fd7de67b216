#!/usr/bin/env bash
# Benchmarks of gitops-run against what users otherwise run, on the same
# generated repositories, in one run; writes docs/benchmarks.md.
#
#   bash bench/run.sh            (what `just bench` runs)
#
# 1. no-op pass (remote unchanged) over file:// and over HTTP (nginx + fcgiwrap
#    + git http-backend on 127.0.0.1): gitops-run, a bash + git CLI baseline
#    (bench/baseline-pass.sh) and `ansible-pull --only-if-changed`; over file://
#    also gitops-run built at an earlier revision (BENCH_BEFORE), in the same
#    hyperfine run, and the fsync/fdatasync calls of a pass (strace -f -c);
# 2. a pass that applies one new commit: gitops-run and `git pull` + ./run.sh;
# 3. the first deployment of a medium repository (5,000 commits, 3,000 files):
#    gitops-run (shallow) and `git clone` (full, and --depth 1) + ./run.sh;
#    over HTTP also without protocol v2 (an nginx location that drops the
#    Git-Protocol header, so git http-backend speaks v0), with the bytes the
#    server sent, for the medium and a large (10,000 commits) repository;
# 4. peak RSS (/usr/bin/time -f %M) and bytes the server sent per no-op poll;
# 5. the CPU time the Git server spends per no-op poll, over HTTP and ssh (a
#    private sshd on 127.0.0.1 running git-shell), from the server processes'
#    CPU accounting in /proc;
# 6. what verifying commit signatures costs a pass (bench/verify.sh, file://):
#    a pass applying a tip 1,000 signed commits ahead with --verify all, and a
#    no-op pass with the keys configured, each against the same pass without
#    verification;
# 7. optional (BENCH_PUSH_LATENCY=1): the time from a push event to the
#    entrypoint starting, through the Debian package's units in a container
#    (bench/push-latency.sh), against the timer's expected wait; or the
#    summary of an earlier run of that script (BENCH_PUSH_RESULTS).
#
# Run as root, it installs what it needs (hyperfine, time, strace, nginx-light,
# fcgiwrap, openssh-server, python3-venv; ansible-core from PyPI into a venv
# under the work directory). Network: only 127.0.0.1 (and the package
# registries for the installs). Environment knobs:
#   BENCH_WORK        work directory (default target/bench; the venv and the
#                     "before" build in it are reused)
#   BENCH_OUT         report to write (default docs/benchmarks.md)
#   BENCH_RUNS_FAST   hyperfine runs for fast commands (default 20)
#   BENCH_RUNS_SLOW   hyperfine runs for ansible-pull and clones (default 5)
#   BENCH_WARMUP      warm-up runs for fast commands (default 3; slow ones get 1)
#   BENCH_POLLS       polls/samples for memory, bytes and fsync counts (default 5)
#   BENCH_ANSIBLE     pip requirement for ansible (default ansible-core)
#   BENCH_BEFORE      revision whose binary is the "before" of the no-op rows
#                     (default 020fb1f; "none" skips it). Built once with
#                     `git worktree add` + `cargo build --release` under
#                     BENCH_WORK/before/ and reused by later runs.
#   BENCH_V0          0 skips the first deployments over protocol v0
#   BENCH_LARGE       0 skips the 10,000-commit repository (v0 and v2 rows)
#   BENCH_SERVER_CPU  0 skips the server CPU per poll
#   BENCH_SSH         0 skips sshd (server CPU and no-op pass over ssh)
#   BENCH_CPU_POLLS   no-op polls per batch for the server CPU (default 40;
#                     3 batches per row)
#   BENCH_VERIFY      0 skips the signature verification rows (bench/verify.sh).
#                     That script's knobs BENCH_COMMITS, BENCH_RUNS_APPLY and
#                     BENCH_RUNS_NOOP are passed on to it, BENCH_WARMUP too; its
#                     work directory is verify/ in the run directory.
#   BENCH_PUSH_LATENCY 1 runs bench/push-latency.sh last (default 0; as root
#                     only: it boots a systemd-nspawn container of the e2e
#                     test's machine name, and builds the .deb unless E2E_DEB
#                     names one; LATENCY_PUSHES is passed on). Its summary is
#                     kept as push-latency.json in the results directory, its
#                     output as push-latency.log.
#   BENCH_PUSH_RESULTS with BENCH_PUSH_LATENCY=0: the summary (JSON) of an
#                     earlier run of bench/push-latency.sh, copied into the
#                     results; the report says it was not measured in this run
#                     and when it was. Unset: no push rows.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CALLER_HOME=${HOME:-}   # the run's own HOME replaces it below; cargo needs this one
BENCH=$ROOT/bench
WORK=${BENCH_WORK:-$ROOT/target/bench}
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
RUNS_FAST=${BENCH_RUNS_FAST:-20}
RUNS_SLOW=${BENCH_RUNS_SLOW:-5}
WARMUP=${BENCH_WARMUP:-3}
POLLS=${BENCH_POLLS:-5}
ANSIBLE_SPEC=${BENCH_ANSIBLE:-ansible-core}
BEFORE=${BENCH_BEFORE:-020fb1f}
V0=${BENCH_V0:-1}
LARGE=${BENCH_LARGE:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-1}
SSH=${BENCH_SSH:-1}
CPU_POLLS=${BENCH_CPU_POLLS:-40}
VERIFY=${BENCH_VERIFY:-1}
PUSH_LATENCY=${BENCH_PUSH_LATENCY:-0}
PUSH_RESULTS=${BENCH_PUSH_RESULTS:-}
CPU_BATCHES=3
# The summary as the report names it: relative to the checkout when inside it,
# else its file name only (no path of this machine in the report).
PUSH_SHOWN=''
if [ -n "$PUSH_RESULTS" ]; then
    PUSH_RESULTS=$(realpath -m -- "$PUSH_RESULTS")
    PUSH_SHOWN=$(realpath -m --relative-base="$ROOT" -- "$PUSH_RESULTS")
    case "$PUSH_SHOWN" in /*) PUSH_SHOWN=$(basename -- "$PUSH_RESULTS") ;; esac
fi
COMMAND_LINE="bash bench/run.sh${*:+ $*}"
for v in BENCH_WORK BENCH_OUT BENCH_RUNS_FAST BENCH_RUNS_SLOW BENCH_WARMUP BENCH_POLLS BENCH_ANSIBLE \
         BENCH_BEFORE BENCH_V0 BENCH_LARGE BENCH_SERVER_CPU BENCH_SSH BENCH_CPU_POLLS \
         BENCH_VERIFY BENCH_COMMITS BENCH_RUNS_APPLY BENCH_RUNS_NOOP \
         BENCH_PUSH_LATENCY LATENCY_PUSHES; do
    [ -n "${!v:-}" ] && COMMAND_LINE="$v=${!v} $COMMAND_LINE"
done
[ -n "$PUSH_SHOWN" ] && COMMAND_LINE="BENCH_PUSH_RESULTS=$PUSH_SHOWN $COMMAND_LINE"

say() { printf '\n== [%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

case "$WORK" in
    *[[:space:]\"\'\$\\]*) die "BENCH_WORK must not contain spaces, quotes, \$ or backslashes: $WORK" ;;
esac
case "$ROOT" in
    *[[:space:]\"\'\$\\]*) die "the checkout path must not contain spaces, quotes, \$ or backslashes: $ROOT" ;;
esac
# The push-latency part is checked now, not after an hour of measurements.
case "$PUSH_LATENCY" in
    0) [ -z "$PUSH_RESULTS" ] || python3 "$BENCH/report.py" --check-push "$PUSH_RESULTS" || die "BENCH_PUSH_RESULTS: see above" ;;
    1) [ -z "$PUSH_RESULTS" ] || die "BENCH_PUSH_LATENCY=1 measures the push latency; BENCH_PUSH_RESULTS takes it from an earlier run: set one of them"
       [ "$(id -u)" -eq 0 ] || die "BENCH_PUSH_LATENCY=1 needs root (bench/push-latency.sh boots a container)" ;;
    *) die "BENCH_PUSH_LATENCY must be 0 or 1, not $PUSH_LATENCY" ;;
esac

# ---------------------------------------------------------------- tools
say "tools"
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v fcgiwrap >/dev/null || [ -x /usr/sbin/fcgiwrap ] || need+=(fcgiwrap)
SYS_PY=/usr/bin/python3
[ -x $SYS_PY ] || SYS_PY=$(command -v python3)
"$SYS_PY" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v git >/dev/null || need+=(git)
[ "$BEFORE" = none ] || command -v strace >/dev/null || need+=(strace)
if [ "$SSH" != 0 ]; then
    [ -x /usr/sbin/sshd ] || need+=(openssh-server)
fi
if [ "$SSH" != 0 ] || [ "$VERIFY" != 0 ]; then
    command -v ssh-keygen >/dev/null || need+=(openssh-client)
fi
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps the packages from starting a system-wide nginx.
    had_policy=0
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
fi
export PATH=$PATH:/usr/sbin:/sbin
NGINX=$(command -v nginx)
FCGIWRAP=$(command -v fcgiwrap)
HTTP_BACKEND=$(git --exec-path)/git-http-backend
[ -x "$HTTP_BACKEND" ] || die "git http-backend not found at $HTTP_BACKEND"

# ------------------------------------------------------------- build
say "cargo build --release (reuses target/)"
(cd "$ROOT" && cargo build --release --locked)
RUSTC_VERSION=$(rustc --version 2>/dev/null | sed 's/^rustc //' || echo unknown)
BIN=$ROOT/target/release/gitops-run
[ -x "$BIN" ] || die "no binary at $BIN"
REVISION=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)

mkdir -p "$WORK"
BIN_BEFORE=''
if [ "$BEFORE" != none ]; then
    # The "before" binary: its own worktree and target directory under the work
    # directory, both kept between runs so that only the first run builds it.
    say "gitops-run at $BEFORE (the \"before\" binary): git worktree + cargo build --release"
    BEFORE_REV=$(git -C "$ROOT" rev-parse --verify --quiet "$BEFORE^{commit}") \
        || die "BENCH_BEFORE=$BEFORE is not a commit of this repository (BENCH_BEFORE=none skips it)"
    BEFORE_SRC=$WORK/before/src
    if [ -e "$BEFORE_SRC/.git" ]; then
        git -C "$BEFORE_SRC" checkout -q --force --detach "$BEFORE_REV"
    else
        git -C "$ROOT" worktree prune
        git -C "$ROOT" worktree add -q --detach "$BEFORE_SRC" "$BEFORE_REV"
    fi
    (cd "$BEFORE_SRC" && cargo build --release --locked --target-dir "$WORK/before/target")
    BIN_BEFORE=$WORK/before/target/release/gitops-run
    [ -x "$BIN_BEFORE" ] || die "no binary at $BIN_BEFORE"
    BEFORE_DESC="$(git -C "$ROOT" log -1 --format='%h %s' "$BEFORE_REV")"
fi
STARTED=$(date +%s)   # the run time reported excludes the installs and the build
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------- ansible
VENV=$WORK/venv
if [ ! -x "$VENV/bin/ansible-pull" ]; then
    say "ansible ($ANSIBLE_SPEC) from PyPI into $VENV"
    rm -rf "$VENV"
    "$SYS_PY" -m venv "$VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q "$ANSIBLE_SPEC"
fi

# ------------------------------------------------ isolated environment
RUN=$WORK/run
# The previous run is kept for inspection until now; it is moved aside, not
# deleted, and deleted only after this run's measurements (see bench/set-aside.sh:
# mass deletions slow down file creation on ext4 without a journal).
TRASH=$WORK/trash
mkdir -p "$TRASH"
[ -e "$RUN" ] && mv "$RUN" "$TRASH/run-$(date +%s%N)"
mkdir -p "$RUN"/{home,origin,state,clients,results/groups,http/tmp,ssh}
RES=$RUN/results
# A summary from an earlier run, copied now: the report reads only the results.
[ -z "$PUSH_RESULTS" ] || cp -- "$PUSH_RESULTS" "$RES/push-latency.json"
# Keep git (and ansible) away from the user's and the system's configuration.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 HOME=$RUN/home
export LC_ALL=C.UTF-8 TZ=UTC
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(GITOPS_|GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE|NAMESPACE|SSL|PROTOCOL|TRACE))' || true)
# gitops-run writes its Prometheus textfile after every pass, by default into
# /var/lib/prometheus/node-exporter when that exists: into the run directory
# instead, so that every machine measures the same work and the system's file
# is left alone. (Binaries from before the metrics ignore the variable.)
mkdir -p "$RUN/metrics"
export GITOPS_METRICS_FILE=$RUN/metrics/gitops-run.prom
export ANSIBLE_PYTHON_INTERPRETER=$VENV/bin/python
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=false ANSIBLE_DEPRECATION_WARNINGS=false

# ------------------------------------------------------------- repos
say "generating repositories (git fast-import, deterministic)"
ORIGIN=$RUN/origin
make_repo() { # KIND DEST
    git init -q --bare -b main "$2"
    python3 "$BENCH/gen-repo.py" "$1" | git -C "$2" fast-import --quiet
    git -C "$2" gc --quiet
}
make_repo small "$ORIGIN/small.git"
make_repo medium "$ORIGIN/medium.git"
[ "$V0" != 0 ] && [ "$LARGE" != 0 ] && make_repo large "$ORIGIN/large.git"
# One origin per (transport, tool) for the apply benchmark, so each run of each
# tool applies exactly one new commit.
for t in file http; do
    for tool in gitops git; do cp -a "$ORIGIN/small.git" "$ORIGIN/apply-$t-$tool.git"; done
done
echo "small:  $(git -C "$ORIGIN/small.git" rev-parse main), $(git -C "$ORIGIN/small.git" ls-tree -r main | wc -l) files" >&2
for r in medium large; do
    [ -d "$ORIGIN/$r.git" ] || continue
    echo "$r: $(git -C "$ORIGIN/$r.git" rev-parse main), $(git -C "$ORIGIN/$r.git" rev-list --count main) commits, $(git -C "$ORIGIN/$r.git" ls-tree -r main | wc -l) files" >&2
done

# -------------------------------------------------------- http server
say "nginx + fcgiwrap + git http-backend on 127.0.0.1"
H=$RUN/http
NGINX_PID='' FCGI_PID='' SSHD_PID=''
# The servers run in cgroups of their own when the system lets root make them
# (cgroup v2, or v1 with the cpuacct controller): every process a server
# starts lands in its cgroup whoever reaps it, so the cgroup's CPU counter is
# the server's whole cost (section 5). fcgiwrap ignores SIGCHLD, so the CPU
# time of the git http-backend processes never reaches its cutime in /proc.
CGROUPS=()
cg_new() { # NAME: make a cgroup for this run and print its directory, or nothing
    local dir
    [ "$(id -u)" -eq 0 ] || return 0
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        dir=/sys/fs/cgroup/gitops-run-bench-$1-$$
    elif [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
        dir=/sys/fs/cgroup/cpuacct/gitops-run-bench-$1-$$
    else
        return 0
    fi
    mkdir "$dir" 2>/dev/null && echo "$dir"
    return 0
}
cg_ns() { # DIR: CPU time used so far by the cgroup's processes, in ns
    if [ -f "$1/cpuacct.usage" ]; then
        cat "$1/cpuacct.usage"
    else
        awk '$1 == "usage_usec" { printf "%.0f\n", $2 * 1000 }' "$1/cpu.stat"
    fi
}
# cg_exec DIR COMMAND...: run COMMAND in the cgroup DIR (none if DIR is empty).
cg_exec() {
    [ -z "$1" ] || echo "$BASHPID" > "$1/cgroup.procs"
    shift
    exec "$@"
}
BENCH_USER=gitops-bench
BENCH_USER_MARK='gitops-run benchmark (bench/run.sh)'
made_user=0
cleanup() {
    local pid cg
    for pid in $NGINX_PID $FCGI_PID $SSHD_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $NGINX_PID $FCGI_PID $SSHD_PID; do
        wait "$pid" 2>/dev/null || true
    done
    for cg in "${CGROUPS[@]}"; do
        for _ in $(seq 20); do
            rmdir "$cg" 2>/dev/null && break
            sleep 0.1
        done
        [ ! -d "$cg" ] || echo "bench/run.sh: could not remove the cgroup $cg" >&2
    done
    if [ $made_user = 1 ]; then
        userdel "$BENCH_USER" 2>/dev/null || echo "bench/run.sh: could not remove the user $BENCH_USER" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for d in body fastcgi proxy scgi uwsgi; do mkdir -p "$H/tmp/$d"; done
user_line=
[ "$(id -u)" -eq 0 ] && user_line="user $(id -un) $(id -gn);"
cat > "$H/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid "$H/nginx.pid";
error_log "$H/error.log" notice;
events { worker_connections 64; }
http {
    log_format bench '\$request_method \$uri \$status \$bytes_sent \$request_length "\$http_user_agent"';
    access_log "$H/access.log" bench;
    client_body_temp_path "$H/tmp/body";
    fastcgi_temp_path "$H/tmp/fastcgi";
    proxy_temp_path "$H/tmp/proxy";
    scgi_temp_path "$H/tmp/scgi";
    uwsgi_temp_path "$H/tmp/uwsgi";
    server {
        listen 127.0.0.1:$PORT;
        server_name 127.0.0.1;
        client_max_body_size 0;
        location / {
            fastcgi_pass "unix:$H/fcgi.sock";
            fastcgi_param SCRIPT_FILENAME "$HTTP_BACKEND";
            fastcgi_param GIT_PROJECT_ROOT "$ORIGIN";
            fastcgi_param GIT_HTTP_EXPORT_ALL 1;
            fastcgi_param GIT_PROTOCOL \$http_git_protocol;
            fastcgi_param PATH_INFO \$uri;
            fastcgi_param QUERY_STRING \$query_string;
            fastcgi_param REQUEST_METHOD \$request_method;
            fastcgi_param CONTENT_TYPE \$content_type;
            fastcgi_param CONTENT_LENGTH \$content_length;
            fastcgi_param REMOTE_ADDR \$remote_addr;
            fastcgi_param SERVER_PROTOCOL \$server_protocol;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        }
        # The same repositories under /v0/ as a server without protocol v2
        # shows them: the Git-Protocol header is not passed on (neither as
        # GIT_PROTOCOL nor as the HTTP_GIT_PROTOCOL that nginx would pass by
        # itself and git http-backend reads), so git http-backend answers with
        # protocol v0.
        location ~ ^/v0(/.*)\$ {
            fastcgi_pass "unix:$H/fcgi.sock";
            fastcgi_param SCRIPT_FILENAME "$HTTP_BACKEND";
            fastcgi_param GIT_PROJECT_ROOT "$ORIGIN";
            fastcgi_param GIT_HTTP_EXPORT_ALL 1;
            fastcgi_param HTTP_GIT_PROTOCOL "";
            fastcgi_param PATH_INFO \$1;
            fastcgi_param QUERY_STRING \$query_string;
            fastcgi_param REQUEST_METHOD \$request_method;
            fastcgi_param CONTENT_TYPE \$content_type;
            fastcgi_param CONTENT_LENGTH \$content_length;
            fastcgi_param REMOTE_ADDR \$remote_addr;
            fastcgi_param SERVER_PROTOCOL \$server_protocol;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        }
    }
}
EOF
CG_HTTP=''
if [ "$SERVER_CPU" != 0 ]; then
    CG_HTTP=$(cg_new http)
    [ -n "$CG_HTTP" ] && CGROUPS+=("$CG_HTTP")
fi
(cg_exec "$CG_HTTP" "$FCGIWRAP" -s "unix:$H/fcgi.sock") </dev/null >"$H/fcgiwrap.log" 2>&1 &
FCGI_PID=$!
(cg_exec "$CG_HTTP" "$NGINX" -p "$H/" -e "$H/error.log" -c "$H/nginx.conf" -g 'daemon off;') </dev/null >"$H/nginx.out" 2>&1 &
NGINX_PID=$!
HTTP=http://127.0.0.1:$PORT
for _ in $(seq 100); do
    git ls-remote "$HTTP/small.git" main >/dev/null 2>&1 && break
    sleep 0.1
done
git ls-remote "$HTTP/small.git" main >/dev/null || { cat "$H/error.log" "$H/nginx.out" "$H/fcgiwrap.log" >&2; die "the HTTP server did not come up"; }
echo "serving $ORIGIN at $HTTP" >&2

url() { # TRANSPORT REPO
    case $1 in
        file) echo "file://$ORIGIN/$2.git" ;;
        http) echo "$HTTP/$2.git" ;;
        v0) echo "$HTTP/v0/$2.git" ;;
        ssh) echo "ssh://$BENCH_USER@127.0.0.1:$SSH_PORT$ORIGIN/$2.git" ;;
    esac
}
# protocol URL: the protocol version the server answers git's request for v2 with.
protocol() {
    local trace
    trace=$(GIT_TRACE_PACKET=1 git -c protocol.version=2 ls-remote "$1" main 2>&1 >/dev/null) || die "git ls-remote $1 failed"
    case $trace in
        *"< version 2"*) echo 2 ;;
        *) echo 0 ;;
    esac
}
[ "$(protocol "$(url http small)")" = 2 ] || die "$(url http small) does not speak protocol v2"
[ "$(protocol "$(url v0 small)")" = 0 ] || die "$(url v0 small) speaks protocol v2; it must not"

# --------------------------------------------------------------- sshd
# A private sshd on 127.0.0.1 set up the way a Git server over ssh usually is:
# a system user whose login shell is git-shell (so a connection runs nothing
# but git-shell and git upload-pack; a login shell would read the user's rc
# files), one authorized key. The user is made for the run and removed after it
# (userdel), unless it already existed.
SSH_PORT=''
if [ "$SSH" != 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "not root: no sshd, the ssh rows are skipped" >&2
    SSH=0
fi
if [ "$SSH" != 0 ]; then
    say "sshd + git-shell on 127.0.0.1"
    S=$RUN/ssh
    GIT_SHELL=$(git --exec-path)/git-shell
    [ -x "$GIT_SHELL" ] || die "git-shell not found at $GIT_SHELL"
    if ! getent passwd "$BENCH_USER" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir / --password '*' \
            --shell "$GIT_SHELL" --comment "$BENCH_USER_MARK" "$BENCH_USER"
        made_user=1
    fi
    [ "$(getent passwd "$BENCH_USER" | cut -d: -f7)" = "$GIT_SHELL" ] \
        || die "the user $BENCH_USER exists without git-shell as its shell; remove it or set BENCH_SSH=0"
    mkdir -p /run/sshd   # privilege separation directory sshd insists on
    ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$S/host_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$S/client_ed25519"
    echo "restrict $(cut -d' ' -f1-2 "$S/client_ed25519.pub")" > "$S/authorized_keys"
    chmod 755 "$S"
    chmod 644 "$S/authorized_keys"
    SSH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # SetEnv: the repositories belong to root, so git upload-pack running as
    # the user needs safe.directory; the same isolation from /etc/gitconfig as
    # the rest of the run.
    cat > "$S/sshd_config" <<EOF
ListenAddress 127.0.0.1:$SSH_PORT
HostKey $S/host_ed25519
AuthorizedKeysFile $S/authorized_keys
PidFile $S/sshd.pid
AllowUsers $BENCH_USER
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
AcceptEnv GIT_PROTOCOL
SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*
EOF
    CG_SSH=''
    if [ "$SERVER_CPU" != 0 ]; then
        CG_SSH=$(cg_new ssh)
        [ -n "$CG_SSH" ] && CGROUPS+=("$CG_SSH")
    fi
    (cg_exec "$CG_SSH" /usr/sbin/sshd -D -e -f "$S/sshd_config") </dev/null >"$S/sshd.log" 2>&1 &
    SSHD_PID=$!
    echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1-2 "$S/host_ed25519.pub")" > "$S/known_hosts"
    # The same ssh options as gitops-run's own (src/git/mod.rs), for the git CLI.
    SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -i $S/client_ed25519 -o UserKnownHostsFile=$S/known_hosts"
    for _ in $(seq 100); do
        GIT_SSH_COMMAND=$SSH_COMMAND git ls-remote "$(url ssh small)" main >/dev/null 2>&1 && break
        sleep 0.1
    done
    GIT_SSH_COMMAND=$SSH_COMMAND git ls-remote "$(url ssh small)" main >/dev/null \
        || { cat "$S/sshd.log" >&2; die "sshd did not come up"; }
    [ "$(GIT_SSH_COMMAND=$SSH_COMMAND protocol "$(url ssh small)")" = 2 ] || die "$(url ssh small) does not speak protocol v2"
    echo "serving $ORIGIN over ssh on 127.0.0.1:$SSH_PORT as $BENCH_USER" >&2
fi

# ----------------------------------------------------------- helpers
# bench ID RUNS WARMUP PREPARE COMMAND...: one hyperfine benchmark, no shell,
# results in $RES/ID.json.
bench() {
    local id=$1 runs=$2 warmup=$3 prepare=$4; shift 4
    local args=(-N --style basic --runs "$runs" --warmup "$warmup" --export-json "$RES/$id.json" -n "$id")
    [ -n "$prepare" ] && args+=(--prepare "$prepare")
    hyperfine "${args[@]}" "$*"
    printf '%s\t%s\n' "$id" "$*" >> "$RES/commands.tsv"
}
# bench_group RUNS WARMUP ID COMMAND [ID COMMAND]...: several commands (each one
# string, no shell) in one hyperfine run, results in $RES/ID.json each.
bench_group() {
    local runs=$1 warmup=$2; shift 2
    local group=$RES/groups/$1.json
    local args=(-N --style basic --runs "$runs" --warmup "$warmup" --export-json "$group")
    while [ $# -gt 0 ]; do
        args+=(-n "$1" "$2")
        printf '%s\t%s\n' "$1" "$2" >> "$RES/commands.tsv"
        shift 2
    done
    hyperfine "${args[@]}"
    python3 - "$group" "$RES" <<'PY'
import json, os, sys
for result in json.load(open(sys.argv[1]))["results"]:
    with open(os.path.join(sys.argv[2], result["command"] + ".json"), "w") as f:
        json.dump({"results": [result]}, f)
PY
}
# rss ID N PREPARE COMMAND...: peak RSS (KiB) of N runs into $RES/ID.rss. This is
# ru_maxrss of the process tree: the largest of the command and its children.
rss() {
    local id=$1 n=$2 prepare=$3; shift 3
    : > "$RES/$id.rss"
    for _ in $(seq "$n"); do
        [ -n "$prepare" ] && $prepare
        /usr/bin/time -f %M -o "$RES/$id.rss.tmp" "$@" >/dev/null 2>&1
        cat "$RES/$id.rss.tmp" >> "$RES/$id.rss"
    done
    rm -f "$RES/$id.rss.tmp"
}
# served ID N PREPARE COMMAND...: for each of N runs over HTTP, the requests
# nginx served and the bytes it sent and received, into $RES/ID.bytes.
served() {
    local id=$1 n=$2 prepare=$3; shift 3
    : > "$RES/$id.bytes"
    for _ in $(seq "$n"); do
        local before
        [ -n "$prepare" ] && $prepare
        before=$(wc -l < "$H/access.log")
        "$@" >/dev/null 2>&1
        tail -n +"$((before + 1))" "$H/access.log" \
            | awk '{ n++; sent += $4; got += $5 } END { print n + 0, sent + 0, got + 0 }' >> "$RES/$id.bytes"
        tail -n +"$((before + 1))" "$H/access.log" >> "$RES/$id.requests"
    done
}
poll_bytes() { # ID N COMMAND...: served, for no-op polls
    local id=$1 n=$2; shift 2
    served "$id" "$n" "" "$@"
}
# syncs ID N COMMAND...: the fsync, fdatasync and sync_file_range calls of the
# process tree (strace -f -c) in each of N runs, one line a run into
# $RES/ID.fsync: "all fsync fdatasync sync_file_range".
syncs() {
    local id=$1 n=$2; shift 2
    : > "$RES/$id.fsync"
    for _ in $(seq "$n"); do
        strace -f -c -e trace=fsync,fdatasync,sync_file_range -o "$RES/$id.strace" "$@" >/dev/null 2>&1 \
            || die "$id failed under strace"
        awk '$NF == "fsync" { f = $4 } $NF == "fdatasync" { d = $4 } $NF == "sync_file_range" { r = $4 }
             END { print f + d + r, f + 0, d + 0, r + 0 }' "$RES/$id.strace" >> "$RES/$id.fsync"
    done
    rm -f "$RES/$id.strace"
}
# server_cpu ID CGROUP BATCHES N COMMAND...: the CPU time of the server in
# CGROUP per run of COMMAND, over BATCHES batches of N runs, one line a batch
# (ns per run) into $RES/ID.cpu.
server_cpu() {
    local id=$1 cg=$2 batches=$3 n=$4; shift 4
    local b i t0 t1
    : > "$RES/$id.cpu"
    for b in $(seq "$batches"); do
        t0=$(cg_ns "$cg")
        for i in $(seq "$n"); do
            "$@" >/dev/null 2>&1 || die "$id: run $i of batch $b failed"
        done
        # The last request's server processes may still be exiting.
        sleep 0.2
        t1=$(cg_ns "$cg")
        echo $(( (t1 - t0) / n )) >> "$RES/$id.cpu"
    done
}
gitops() { # STATE_DIR URL
    "$BIN" --repo "$2" --state-dir "$1"
}
deployed() { # STATE_DIR
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["deployed"]["commit"])' "$1/state.json"
}
ANSIBLE_PULL=$VENV/bin/ansible-pull
ansible_cmd() { # URL DIR: as one string, for hyperfine
    echo "$ANSIBLE_PULL -U $1 -C main -d $2 -i localhost, --only-if-changed local.yml"
}
ansible_argv() { # URL DIR: as words in ANSIBLE_ARGV, to run directly
    ANSIBLE_ARGV=("$ANSIBLE_PULL" -U "$1" -C main -d "$2" -i "localhost," --only-if-changed local.yml)
}

# ------------------------------------------------------- 1. no-op pass
for t in file http; do
    say "1. no-op pass over $t"
    u=$(url $t small)
    st=$RUN/state/noop-$t
    gitops "$st" "$u"                           # first pass: initial deployment
    gitops "$st" "$u"                           # the state a no-op pass sees
    git clone -q "$u" "$RUN/clients/bash-$t"
    bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-$t"
    ansible_argv "$u" "$RUN/clients/ansible-$t"
    "${ANSIBLE_ARGV[@]}" >"$RES/ansible-$t-first.log" 2>&1 \
        || { cat "$RES/ansible-$t-first.log" >&2; die "ansible-pull's first run failed"; }
    "${ANSIBLE_ARGV[@]}" >"$RES/ansible-$t-noop.log" 2>&1
    grep -q 'has not changed' "$RES/ansible-$t-noop.log" \
        || { cat "$RES/ansible-$t-noop.log" >&2; die "ansible-pull's second run was not a no-op"; }

    # gitops-run, the "before" binary (file:// only) and the bash baseline in
    # one hyperfine run.
    group=("noop-$t-gitops" "$BIN --repo $u --state-dir $st")
    stb=$RUN/state/noop-$t-before
    if [ $t = file ] && [ -n "$BIN_BEFORE" ]; then
        "$BIN_BEFORE" --repo "$u" --state-dir "$stb"   # initial deployment
        "$BIN_BEFORE" --repo "$u" --state-dir "$stb"
        group+=("noop-$t-before" "$BIN_BEFORE --repo $u --state-dir $stb")
    fi
    group+=("noop-$t-bash" "bash $BENCH/baseline-pass.sh $RUN/clients/bash-$t")
    bench_group "$RUNS_FAST" "$WARMUP" "${group[@]}"
    bench "noop-$t-ansible" "$RUNS_SLOW" 1 "" "$(ansible_cmd "$u" "$RUN/clients/ansible-$t")"
    [ "$(deployed "$st")" = "$(git -C "$ORIGIN/small.git" rev-parse main)" ] || die "no-op state moved"

    rss "noop-$t-gitops" "$POLLS" "" "$BIN" --repo "$u" --state-dir "$st"
    rss "noop-$t-bash" "$POLLS" "" bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-$t"
    rss "noop-$t-ansible" 3 "" "${ANSIBLE_ARGV[@]}"
    if [ $t = file ] && [ -n "$BIN_BEFORE" ]; then
        rss "noop-$t-before" "$POLLS" "" "$BIN_BEFORE" --repo "$u" --state-dir "$stb"
        syncs "noop-$t-gitops" "$POLLS" "$BIN" --repo "$u" --state-dir "$st"
        syncs "noop-$t-before" "$POLLS" "$BIN_BEFORE" --repo "$u" --state-dir "$stb"
        syncs "noop-$t-bash" "$POLLS" bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-$t"
        [ "$(deployed "$stb")" = "$(git -C "$ORIGIN/small.git" rev-parse main)" ] || die "no-op state of the before binary moved"
    fi
    if [ $t = http ]; then
        poll_bytes "noop-http-gitops" "$POLLS" "$BIN" --repo "$u" --state-dir "$st"
        poll_bytes "noop-http-bash" "$POLLS" bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-$t"
        poll_bytes "noop-http-ansible" 3 "${ANSIBLE_ARGV[@]}"
    fi
done

# ------------------------------------------------ 2. apply one commit
for t in file http; do
    say "2. apply one new commit over $t"
    og=$ORIGIN/apply-$t-gitops.git
    st=$RUN/state/apply-$t
    gitops "$st" "$(url $t apply-$t-gitops)"
    bench "apply-$t-gitops" "$RUNS_FAST" "$WARMUP" "bash $BENCH/add-commit.sh $og" \
        "$BIN" --repo "$(url $t apply-$t-gitops)" --state-dir "$st"
    [ "$(deployed "$st")" = "$(git -C "$og" rev-parse main)" ] || die "gitops-run did not deploy the tip of $og"
    echo "gitops-run applied $(cat "$og/bench-counter") commits, one per run" >&2

    ob=$ORIGIN/apply-$t-git.git
    cl=$RUN/clients/apply-$t
    git clone -q "$(url $t apply-$t-git)" "$cl"
    bench "apply-$t-git" "$RUNS_FAST" "$WARMUP" "bash $BENCH/add-commit.sh $ob" \
        bash "$BENCH/baseline-pull.sh" "$cl"
    [ "$(git -C "$cl" rev-parse HEAD)" = "$(git -C "$ob" rev-parse main)" ] || die "git pull did not reach the tip of $ob"
done

# ------------------------------------------ 3. first clone (medium repo)
for t in file http; do
    say "3. first deployment of the medium repository over $t"
    u=$(url $t medium)
    st=$RUN/state/clone-$t
    cl=$RUN/clients/clone-$t
    bench "clone-$t-gitops" "$RUNS_SLOW" 1 "bash $BENCH/set-aside.sh $st" "$BIN" --repo "$u" --state-dir "$st"
    [ "$(deployed "$st")" = "$(git -C "$ORIGIN/medium.git" rev-parse main)" ] || die "gitops-run did not deploy the medium repo"
    [ "$(find "$st/current/" -type f | wc -l)" -ge 3000 ] || die "gitops-run's tree of the medium repo is incomplete"
    bench "clone-$t-git" "$RUNS_SLOW" 1 "bash $BENCH/set-aside.sh $cl" bash "$BENCH/baseline-clone.sh" "$u" "$cl"
    bench "clone-$t-git-depth1" "$RUNS_SLOW" 1 "bash $BENCH/set-aside.sh $cl" bash "$BENCH/baseline-clone.sh" --depth 1 "$u" "$cl"
    rss "clone-$t-gitops" 3 "bash $BENCH/set-aside.sh $st" "$BIN" --repo "$u" --state-dir "$st"
    rss "clone-$t-git" 3 "bash $BENCH/set-aside.sh $cl" bash "$BENCH/baseline-clone.sh" "$u" "$cl"
    rss "clone-$t-git-depth1" 3 "bash $BENCH/set-aside.sh $cl" bash "$BENCH/baseline-clone.sh" --depth 1 "$u" "$cl"
done

# ------------------------- 3b. first deployment without protocol v2 (HTTP)
# The same nginx serves the repositories under /v0/ without passing the
# Git-Protocol header on: git http-backend answers with protocol v0. For each
# repository: gitops-run and `git clone --depth 1` over v0, the same over v2
# (the medium repository's v2 timings are those of section 3), and the bytes
# nginx sent for one first deployment of each.
if [ "$V0" != 0 ]; then
    repos=(medium)
    [ "$LARGE" != 0 ] && repos+=(large)
    for r in "${repos[@]}"; do
        for p in v2 v0; do
            say "3b. first deployment of the $r repository over HTTP, protocol $p"
            if [ $p = v2 ]; then u=$(url http $r); else u=$(url v0 $r); fi
            # Result ids: the medium repository over v2 keeps section 3's names.
            id=clone-$p; [ $p = v2 ] && id=clone-http
            [ $r = medium ] || id=$id-$r
            st=$RUN/state/$id
            cl=$RUN/clients/$id
            if [ $r != medium ] || [ $p != v2 ]; then
                bench "$id-gitops" "$RUNS_SLOW" 1 "bash $BENCH/set-aside.sh $st" "$BIN" --repo "$u" --state-dir "$st"
                bench "$id-git-depth1" "$RUNS_SLOW" 1 "bash $BENCH/set-aside.sh $cl" bash "$BENCH/baseline-clone.sh" --depth 1 "$u" "$cl"
            fi
            served "$id-gitops" 1 "bash $BENCH/set-aside.sh $st" "$BIN" --repo "$u" --state-dir "$st"
            [ "$(deployed "$st")" = "$(git -C "$ORIGIN/$r.git" rev-parse main)" ] || die "gitops-run did not deploy the $r repo over $p"
            # What gitops-run fetched: the commits its cache holds after a first deployment.
            git -C "$st/cache.git" rev-list --count refs/remotes/origin/main > "$RES/$id-gitops.commits"
            served "$id-git-depth1" 1 "bash $BENCH/set-aside.sh $cl" bash "$BENCH/baseline-clone.sh" --depth 1 "$u" "$cl"
            git -C "$cl" rev-list --count HEAD > "$RES/$id-git-depth1.commits"
        done
        if [ $r = medium ]; then
            rss clone-v0-gitops 3 "bash $BENCH/set-aside.sh $RUN/state/clone-v0" "$BIN" --repo "$(url v0 medium)" --state-dir "$RUN/state/clone-v0"
        fi
    done
fi

# ------------------------------------------- 5. server CPU per no-op poll
# The CPU time the Git server spends on one no-op poll, from the CPU counter of
# the server's cgroup (see cg_new) before and after a batch of polls: over
# HTTP nginx, fcgiwrap and the git http-backend and git upload-pack processes
# they start; over ssh sshd (listener, per-connection processes), git-shell
# and git upload-pack. The clients run outside those cgroups.
if [ "$SERVER_CPU" != 0 ] && [ -z "$CG_HTTP" ]; then
    echo "no cgroup could be made (not root, or no cgroup v2 / v1 cpuacct): the server CPU rows are skipped" >&2
elif [ "$SERVER_CPU" != 0 ]; then
    say "5. server CPU per no-op poll over HTTP"
    server_cpu cpu-http-gitops "$CG_HTTP" "$CPU_BATCHES" "$CPU_POLLS" \
        "$BIN" --repo "$(url http small)" --state-dir "$RUN/state/noop-http"
    server_cpu cpu-http-git "$CG_HTTP" "$CPU_BATCHES" "$CPU_POLLS" \
        bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-http"
    [ "$(deployed "$RUN/state/noop-http")" = "$(git -C "$ORIGIN/small.git" rev-parse main)" ] || die "no-op state moved"
fi
if [ "$SSH" != 0 ]; then
    say "5. no-op pass and server CPU per no-op poll over ssh"
    u=$(url ssh small)
    st=$RUN/state/noop-ssh
    ssh_args=(--ssh-key "$S/client_ed25519" --known-hosts "$S/known_hosts")
    "$BIN" --repo "$u" --state-dir "$st" "${ssh_args[@]}"
    "$BIN" --repo "$u" --state-dir "$st" "${ssh_args[@]}"
    GIT_SSH_COMMAND=$SSH_COMMAND git clone -q "$u" "$RUN/clients/bash-ssh"
    git -C "$RUN/clients/bash-ssh" config core.sshCommand "$SSH_COMMAND"
    bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-ssh"
    bench_group "$RUNS_FAST" "$WARMUP" \
        noop-ssh-gitops "$BIN --repo $u --state-dir $st ${ssh_args[*]}" \
        noop-ssh-bash "bash $BENCH/baseline-pass.sh $RUN/clients/bash-ssh"
    if [ -n "$CG_SSH" ]; then
        server_cpu cpu-ssh-gitops "$CG_SSH" "$CPU_BATCHES" "$CPU_POLLS" "$BIN" --repo "$u" --state-dir "$st" "${ssh_args[@]}"
        server_cpu cpu-ssh-git "$CG_SSH" "$CPU_BATCHES" "$CPU_POLLS" bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-ssh"
    fi
    [ "$(deployed "$st")" = "$(git -C "$ORIGIN/small.git" rev-parse main)" ] || die "no-op state moved"
fi

# ------------------------------------------- 6. signature verification
# bench/verify.sh signs its own commits (ed25519, gpg.format=ssh) in its own
# origin and state directories, inside the run directory, and writes its
# results beside the others (BENCH_RESULTS). Only file://, nothing served. It
# measures the binary built above (BENCH_BIN): cargo would not find its
# toolchain under this run's HOME.
if [ "$VERIFY" != 0 ]; then
    say "6. signature verification (bench/verify.sh)"
    BENCH_WORK=$RUN/verify BENCH_WARMUP=$WARMUP BENCH_RESULTS=$RES BENCH_BIN=$BIN \
        bash "$BENCH/verify.sh" > "$RES/verify.md"
fi

# ------------------------------------------------ 7. push to entrypoint
# bench/push-latency.sh installs the Debian package in a container and times
# pushes through the shipped units; last, so that the container never runs
# beside the other measurements. It builds the package with cargo unless
# E2E_DEB names one, hence the caller's HOME (where the toolchain is).
PUSH_FAILED=0
if [ "$PUSH_LATENCY" = 1 ]; then
    say "7. push to entrypoint (bench/push-latency.sh; log: $RES/push-latency.log)"
    if HOME=$CALLER_HOME LATENCY_RESULTS=$RES/push-latency.json \
        bash "$BENCH/push-latency.sh" > "$RES/push-latency.log" 2>&1; then
        grep -E 'push to entrypoint: median' "$RES/push-latency.log" >&2 || true
    else
        tail -n 30 "$RES/push-latency.log" >&2
        echo "bench/run.sh: bench/push-latency.sh failed; the report will have no push rows" >&2
        rm -f "$RES/push-latency.json"
        PUSH_FAILED=1
    fi
fi

# ------------------------------------------------------------ report
say "report"
{
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "memory=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel=$(uname -srm)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "git=$(git --version | sed 's/^git version //')"
    echo "ansible=ansible-core $("$VENV/bin/python" -c 'import ansible.release as r; print(r.__version__)') (Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'))"
    echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    echo "fcgiwrap=$(dpkg-query -W -f '${Version}' fcgiwrap 2>/dev/null || echo unknown)"
    echo "hyperfine=$(hyperfine --version | sed 's/^hyperfine //')"
    echo "rustc=$RUSTC_VERSION"
    [ -n "$BIN_BEFORE" ] && echo "before=$BEFORE_DESC"
    echo "cpu_polls=$CPU_POLLS"
    case ${CG_HTTP:-${CG_SSH:-}} in
        /sys/fs/cgroup/cpuacct/*) echo "cgroup=cgroup v1, cpuacct.usage" ;;
        /sys/fs/cgroup/*) echo "cgroup=cgroup v2, cpu.stat usage_usec" ;;
    esac
    echo "cpu_batches=$CPU_BATCHES"
    echo "sshd=$(dpkg-query -W -f '${Version}' openssh-server 2>/dev/null || echo unknown)"
    echo "revision=$REVISION"
    if [ -e "$RES/push-latency.json" ]; then
        if [ "$PUSH_LATENCY" = 1 ]; then echo "push_source=run"; else echo "push_source=file"; echo "push_file=$PUSH_SHOWN"; fi
    fi
    echo "command=$COMMAND_LINE"
    echo "work=$RUN"
    echo "root=$ROOT"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "duration=$(( $(date +%s) - STARTED ))"
    echo "load=$LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "runs_fast=$RUNS_FAST"
    echo "runs_slow=$RUNS_SLOW"
    echo "warmup=$WARMUP"
    echo "polls=$POLLS"
    echo "small_files=$(git -C "$ORIGIN/small.git" ls-tree -r main | wc -l)"
    echo "medium_commits=$(git -C "$ORIGIN/medium.git" rev-list --count main)"
    echo "medium_files=$(git -C "$ORIGIN/medium.git" ls-tree -r main | wc -l)"
    echo "medium_pack=$(du -sk "$ORIGIN/medium.git/objects/pack" | cut -f1)"
    if [ -d "$ORIGIN/large.git" ]; then
        echo "large_commits=$(git -C "$ORIGIN/large.git" rev-list --count main)"
        echo "large_files=$(git -C "$ORIGIN/large.git" ls-tree -r main | wc -l)"
        echo "large_pack=$(du -sk "$ORIGIN/large.git/objects/pack" | cut -f1)"
    fi
} > "$RES/machine.txt"
python3 "$BENCH/report.py" "$RES" "$OUT"
# Deletions only now that nothing is measured any more (see bench/set-aside.sh).
say "deleting the previous run and the set-aside directories"
rm -rf "$TRASH"
find "$RUN/state" "$RUN/clients" -maxdepth 1 -name '.aside-*' -exec rm -rf {} +
echo "wrote $OUT ($(( $(date +%s) - STARTED )) s after the build)" >&2
[ "$PUSH_FAILED" = 0 ] || die "bench/push-latency.sh failed (log: $RES/push-latency.log): the report lacks the push rows"
