#!/usr/bin/env bash
# Benchmarks of gitops-run against what users otherwise run, on the same
# generated repositories, in one run; writes docs/benchmarks.md.
#
#   bash bench/run.sh            (what `just bench` runs)
#
# 1. no-op pass (remote unchanged) over file:// and over HTTP (nginx + fcgiwrap
#    + git http-backend on 127.0.0.1): gitops-run, a bash + git CLI baseline
#    (bench/baseline-pass.sh) and `ansible-pull --only-if-changed`;
# 2. a pass that applies one new commit: gitops-run and `git pull` + ./run.sh;
# 3. the first deployment of a medium repository (5,000 commits, 3,000 files):
#    gitops-run (shallow) and `git clone` (full, and --depth 1) + ./run.sh;
# 4. peak RSS (/usr/bin/time -f %M) and bytes the server sent per no-op poll.
#
# Run as root, it installs what it needs (hyperfine, time, nginx-light,
# fcgiwrap, python3-venv; ansible-core from PyPI into a venv under the work
# directory). Network: only 127.0.0.1 (and the package registries for the
# installs). Environment knobs:
#   BENCH_WORK        work directory (default target/bench; the venv in it is reused)
#   BENCH_OUT         report to write (default docs/benchmarks.md)
#   BENCH_RUNS_FAST   hyperfine runs for fast commands (default 20)
#   BENCH_RUNS_SLOW   hyperfine runs for ansible-pull and clones (default 5)
#   BENCH_WARMUP      warm-up runs for fast commands (default 3; slow ones get 1)
#   BENCH_POLLS       polls/samples for memory and bytes measurements (default 5)
#   BENCH_ANSIBLE     pip requirement for ansible (default ansible-core)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
WORK=${BENCH_WORK:-$ROOT/target/bench}
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
RUNS_FAST=${BENCH_RUNS_FAST:-20}
RUNS_SLOW=${BENCH_RUNS_SLOW:-5}
WARMUP=${BENCH_WARMUP:-3}
POLLS=${BENCH_POLLS:-5}
ANSIBLE_SPEC=${BENCH_ANSIBLE:-ansible-core}
COMMAND_LINE="bash bench/run.sh${*:+ $*}"
for v in BENCH_WORK BENCH_OUT BENCH_RUNS_FAST BENCH_RUNS_SLOW BENCH_WARMUP BENCH_POLLS BENCH_ANSIBLE; do
    [ -n "${!v:-}" ] && COMMAND_LINE="$v=${!v} $COMMAND_LINE"
done

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

case "$WORK" in
    *[[:space:]\"\'\$\\]*) die "BENCH_WORK must not contain spaces, quotes, \$ or backslashes: $WORK" ;;
esac
case "$ROOT" in
    *[[:space:]\"\'\$\\]*) die "the checkout path must not contain spaces, quotes, \$ or backslashes: $ROOT" ;;
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
STARTED=$(date +%s)   # the run time reported excludes the installs and the build
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------- ansible
mkdir -p "$WORK"
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
mkdir -p "$RUN"/{home,origin,state,clients,results,http/tmp}
RES=$RUN/results
# Keep git (and ansible) away from the user's and the system's configuration.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 HOME=$RUN/home
export LC_ALL=C.UTF-8 TZ=UTC
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(GITOPS_|GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE|NAMESPACE|SSL|PROTOCOL|TRACE))' || true)
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
# One origin per (transport, tool) for the apply benchmark, so each run of each
# tool applies exactly one new commit.
for t in file http; do
    for tool in gitops git; do cp -a "$ORIGIN/small.git" "$ORIGIN/apply-$t-$tool.git"; done
done
echo "small:  $(git -C "$ORIGIN/small.git" rev-parse main), $(git -C "$ORIGIN/small.git" ls-tree -r main | wc -l) files" >&2
echo "medium: $(git -C "$ORIGIN/medium.git" rev-parse main), $(git -C "$ORIGIN/medium.git" rev-list --count main) commits, $(git -C "$ORIGIN/medium.git" ls-tree -r main | wc -l) files" >&2

# -------------------------------------------------------- http server
say "nginx + fcgiwrap + git http-backend on 127.0.0.1"
H=$RUN/http
NGINX_PID='' FCGI_PID=''
cleanup() {
    local pid
    for pid in $NGINX_PID $FCGI_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $NGINX_PID $FCGI_PID; do
        wait "$pid" 2>/dev/null || true
    done
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
    }
}
EOF
"$FCGIWRAP" -s "unix:$H/fcgi.sock" </dev/null >"$H/fcgiwrap.log" 2>&1 &
FCGI_PID=$!
"$NGINX" -p "$H/" -e "$H/error.log" -c "$H/nginx.conf" -g 'daemon off;' </dev/null >"$H/nginx.out" 2>&1 &
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
    esac
}

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
# poll_bytes ID N COMMAND...: for each of N no-op polls over HTTP, the requests
# nginx served and the bytes it sent and received, into $RES/ID.bytes.
poll_bytes() {
    local id=$1 n=$2; shift 2
    : > "$RES/$id.bytes"
    for _ in $(seq "$n"); do
        local before
        before=$(wc -l < "$H/access.log")
        "$@" >/dev/null 2>&1
        tail -n +"$((before + 1))" "$H/access.log" \
            | awk '{ n++; sent += $4; got += $5 } END { print n + 0, sent + 0, got + 0 }' >> "$RES/$id.bytes"
        tail -n +"$((before + 1))" "$H/access.log" >> "$RES/$id.requests"
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

    bench "noop-$t-gitops" "$RUNS_FAST" "$WARMUP" "" "$BIN" --repo "$u" --state-dir "$st"
    bench "noop-$t-bash" "$RUNS_FAST" "$WARMUP" "" bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-$t"
    bench "noop-$t-ansible" "$RUNS_SLOW" 1 "" "$(ansible_cmd "$u" "$RUN/clients/ansible-$t")"
    [ "$(deployed "$st")" = "$(git -C "$ORIGIN/small.git" rev-parse main)" ] || die "no-op state moved"

    rss "noop-$t-gitops" "$POLLS" "" "$BIN" --repo "$u" --state-dir "$st"
    rss "noop-$t-bash" "$POLLS" "" bash "$BENCH/baseline-pass.sh" "$RUN/clients/bash-$t"
    rss "noop-$t-ansible" 3 "" "${ANSIBLE_ARGV[@]}"
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
    echo "revision=$REVISION"
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
} > "$RES/machine.txt"
python3 "$BENCH/report.py" "$RES" "$OUT"
# Deletions only now that nothing is measured any more (see bench/set-aside.sh).
rm -rf "$TRASH"
find "$RUN/state" "$RUN/clients" -maxdepth 1 -name '.aside-*' -exec rm -rf {} +
echo "wrote $OUT ($(( $(date +%s) - STARTED )) s after the build)" >&2
