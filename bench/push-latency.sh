#!/usr/bin/env bash
# Push-to-deploy latency through the shipped units (issue 15): the time from
# a forge's webhook request to the entrypoint starting, on the Debian package
# installed in a container booted with systemd-nspawn (the machinery of
# tests/e2e/lib.sh), with the push receiver set up as docs/receive.md says
# and no timer:
#
#   curl (signed GitHub push event) -> gitops-run-receiver.socket
#     -> gitops-run-receiver.service -> /run/gitops-run-receiver/trigger
#     -> gitops-run-trigger.path -> gitops-run.service (fetch, checkout)
#     -> run.sh, whose first line records the time
#
# Each push is measured twice: with the receiver stopped before the request
# (cold: the socket starts it, as for any push more than a minute after the
# last, when the receiver has exited), and with it still running from the
# previous request (warm; more than the receiver's 5 s --min-interval later).
# Each sample is split into three stages from the container's journal: the
# receiver (request to trigger file written), systemd (trigger to
# gitops-run.service starting) and the pass (its start to the entrypoint's).
# Prints every sample, then median, min and max of each kind and the ratio
# to the 150 s a push waits on average for the shipped timer (a pass every
# 5 minutes: half of that, not counting its random delay of up to 60 s).
#
# Run as root: bash bench/push-latency.sh. Knobs:
#   LATENCY_PUSHES  pushes of each kind (default 7, at least 5)
#   LATENCY_RESULTS where to write the summary (JSON, below; default
#                   target/e2e/push-latency/summary.json, which the next run
#                   removes with the rest of that directory)
#   E2E_DEB         test this .deb instead of building one (as tests/e2e/run.sh)
#   E2E_KEEP        keep the container's files (target/e2e/rootfs-run)
# Logs: target/e2e/push-latency/. Network: 127.0.0.1 only (and apt and the
# first debootstrap, as the e2e test). The container has the e2e test's
# machine name: the script refuses to start while one of that name runs.
#
# The summary, read by bench/report.py (bench/run.sh: BENCH_PUSH_LATENCY,
# BENCH_PUSH_RESULTS), is one JSON object:
#   format         1
#   date           when the samples were taken (UTC, "2026-12-02T05:35Z")
#   pushes         pushes of each kind
#   timer_expected_secs, min_interval_secs   the constants below
#   package        {file, version, sha256, gitops_run_version, source}:
#                  source is "built from revision R" or "given (E2E_DEB)"
#   machine        {nproc, cpu, memory, kernel, os, container_os,
#                  container_systemd, load_start, load_end} (strings)
#   samples        {"cold": [...], "warm": [...]}, one object a push:
#                  {total, receiver, systemd, pass} in seconds, in the order
#                  taken; total is the request to the entrypoint's start
set -Eeuo pipefail
shopt -s inherit_errexit
caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
top=$PWD
results=${LATENCY_RESULTS:-$top/target/e2e/push-latency/summary.json}
case "$results" in /*) ;; *) results=$caller_dir/$results ;; esac
# The e2e test boots a container of the same machine name on the same
# loopback: never beside it.
if pgrep -f -- '--machine=gitops-e2e( |$)' >/dev/null; then
    echo "push-latency: a container named gitops-e2e runs (the e2e test?); try again when it has stopped" >&2
    exit 1
fi
e2e_name=push-latency
e2e_run=$top/target/e2e/push-latency
# shellcheck source=tests/e2e/lib.sh
. "$top/tests/e2e/lib.sh"

PUSHES=${LATENCY_PUSHES:-7}
TIMER_EXPECTED_SECS=150
MIN_INTERVAL_SECS=5        # the receiver's default --min-interval
DEPLOY_SECS=60             # a push to its entrypoint, at most (a failure, not a figure)
[ "$PUSHES" -ge 5 ] 2>/dev/null || { echo "push-latency: LATENCY_PUSHES must be a number, at least 5" >&2; exit 2; }

# The entrypoint's first line records its commit and the time it started.
started_file=/var/lib/e2e-entrypoint-started
entry='printf "%s %s\n" "$GITOPS_COMMIT" "$(date +%s.%N)" > '"$started_file"'
echo "push-latency: applying $GITOPS_COMMIT"'

e2e_start
step_install_tools curl openssl
step_build_deb
if [ -n "${E2E_DEB:-}" ]; then
    deb_source="given (E2E_DEB)"
else
    deb_source="built from revision $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
fi
step_rootfs
step_git_daemon
c0=$(commit "first" "$entry")
step_boot
step_install_deb
ok "package installed: $(inside gitops-run --version)"

begin configure
# A host without the timer: only pushes start passes.
inside systemctl disable --now gitops-run.timer 2>/dev/null
printf '# written by bench/push-latency.sh\nGITOPS_REPO=%s\n' "$repo_url" | put_inside /etc/gitops-run/config 0600
receiver_setup
[ "$(inside systemctl is-active gitops-run-trigger.path)" = active ] || fail "gitops-run-trigger.path is not active"
ok "receiver on 127.0.0.1:$receiver_port, timer disabled"

# The entrypoint's start time of COMMIT, read from the container's files on
# the host side (no process inside, which would load the machine while it
# is measured); fails while another commit's is there.
entry_time() {
    local c t
    read -r c t < "$rootfs$started_file" 2>/dev/null || return 1
    [ "$c" = "$1" ] && echo "$t"
}

last_request=0
# push KIND: one commit, one signed push event; appends "KIND total receiver
# systemd pass" (seconds) to $run/samples.
push() {
    local kind=$1 before c body answer t0 t1 deadline j trig start
    before=$(status_field .deployed.commit)
    c=$(commit "push $(( $(wc -l < "$run/samples" 2>/dev/null || echo 0) + 1 )) ($kind)" "$entry")
    body=$(push_event "$before" "$c")
    if [ "$kind" = cold ]; then
        inside systemctl stop gitops-run-receiver.service 2>/dev/null   # "can still be activated by the socket": the point
    else
        [ "$(inside systemctl is-active gitops-run-receiver.service)" = active ] || fail "the receiver is not running for a warm sample"
        # A request within --min-interval of the last trigger would be held back.
        while awk -v l="$last_request" -v n="$(date +%s.%N)" -v m="$MIN_INTERVAL_SECS" 'BEGIN { exit !(n - l < m + 0.5) }'; do
            sleep 0.2
        done
    fi
    t0=$(date +%s.%N)
    answer=$(post_hook "$body" "X-Hub-Signature-256: sha256=$(hmac_hex "$receiver_secret" "$body")")
    last_request=$t0
    [ "$answer" = "202 pass requested" ] || fail "the signed push event for ${c:0:12} was answered '$answer'"
    deadline=$(( $(date +%s) + DEPLOY_SECS ))
    until t1=$(entry_time "$c"); do
        [ "$(date +%s)" -lt "$deadline" ] || fail "the entrypoint of ${c:0:12} did not start within ${DEPLOY_SECS}s of the push"
        sleep 0.02
    done
    wait_until 60 "gitops-run.service is no longer running" unit_settled
    deployed_is "$c" || fail "the pass after the push of ${c:0:12} deployed $(status_field .deployed.commit)"
    # The stages, from the journal (microseconds since the epoch).
    j=$(inside journalctl --no-pager -o json --since "@${t0%.*}")
    trig=$(jq -r 'select(._SYSTEMD_UNIT == "gitops-run-receiver.service" and ((.MESSAGE | tostring) | contains("asked for a pass"))) | (._SOURCE_REALTIME_TIMESTAMP // .__REALTIME_TIMESTAMP)' <<<"$j" | tail -n 1)
    start=$(jq -r 'select(.UNIT == "gitops-run.service" and .MESSAGE_ID == "7d4958e842da4a758f6c1cdc7b36dcc5") | (._SOURCE_REALTIME_TIMESTAMP // .__REALTIME_TIMESTAMP)' <<<"$j" | tail -n 1)
    [ -n "$trig" ] && [ -n "$start" ] || fail "the journal lacks the receiver's trigger or the unit's start after the push of ${c:0:12}"
    awk -v k="$kind" -v t0="$t0" -v tr="$trig" -v st="$start" -v t1="$t1" 'BEGIN {
        printf "%s %.3f %.3f %.3f %.3f\n", k, t1 - t0, tr / 1e6 - t0, (st - tr) / 1e6, t1 - st / 1e6 }' >> "$run/samples"
    read -r _ total r s p < <(tail -n 1 "$run/samples")
    say "$(printf '%-4s %2d: %6.3f s   receiver %.3f + systemd %.3f + pass %.3f' "$kind" "$(grep -c "^$kind " "$run/samples")" "$total" "$r" "$s" "$p")"
}

begin warm-up
# The first deployment clones the repository: not a sample.
: > "$run/samples"
t0=$(date +%s.%N)
body=$(push_event "" "$c0")
answer=$(post_hook "$body" "X-Hub-Signature-256: sha256=$(hmac_hex "$receiver_secret" "$body")")
last_request=$t0
[ "$answer" = "202 pass requested" ] || fail "the first push event was answered '$answer'"
wait_until 60 "the first push deploys ${c0:0:12}" deployed_is "$c0"
wait_until 60 "gitops-run.service is no longer running" unit_settled
ok "first deployment ${c0:0:12} by a push (not measured)"

begin measure
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in $(seq 1 "$PUSHES"); do
    push cold
    push warm
done
ok "$PUSHES cold and $PUSHES warm pushes deployed"

begin report
# stats KIND COLUMN: "median min max" of a column of the samples.
stats() {
    awk -v k="$1" -v col="$2" '$1 == k { print $col }' "$run/samples" | sort -g | awk '
        { v[NR] = $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.3f %.3f %.3f\n", m, v[1], v[NR] }'
}
for kind in cold warm; do
    read -r med min max < <(stats "$kind" 2)
    read -r rmed _ _ < <(stats "$kind" 3)
    read -r smed _ _ < <(stats "$kind" 4)
    read -r pmed _ _ < <(stats "$kind" 5)
    say "$(printf '%s push to entrypoint: median %.2f s (min %.2f, max %.2f) over %d pushes; stage medians: receiver %.3f, systemd %.3f, pass %.3f' \
        "$kind" "$med" "$min" "$max" "$PUSHES" "$rmed" "$smed" "$pmed")"
    say "$(awk -v m="$med" -v t="$TIMER_EXPECTED_SECS" -v k="$kind" 'BEGIN {
        printf "%s: %.2f s against the timer'"'"'s expected %d s: %.2f%% of it, %.0f times faster", k, m, t, 100 * m / t, t / m }')"
done
cp "$run/samples" "$run/samples.txt"
ok "samples in $run/samples.txt (kind, total, receiver, systemd, pass; seconds)"

# The summary (see the top of this file), written whole or not at all.
mkdir -p "$(dirname "$results")"
jq -n --rawfile samples "$run/samples" \
    --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
    --argjson pushes "$PUSHES" \
    --argjson timer "$TIMER_EXPECTED_SECS" \
    --argjson min_interval "$MIN_INTERVAL_SECS" \
    --arg deb_file "$(basename "$deb")" \
    --arg deb_version "$(dpkg-deb -f "$deb" Version)" \
    --arg deb_sha256 "$(sha256sum "$deb" | cut -d' ' -f1)" \
    --arg deb_source "$deb_source" \
    --arg gitops_version "$(inside gitops-run --version)" \
    --arg nproc "$(nproc)" \
    --arg cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
    --arg memory "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
    --arg kernel "$(uname -srm)" \
    --arg os "$(. /etc/os-release && echo "$PRETTY_NAME")" \
    --arg container_os "$(. "$rootfs/etc/os-release" && echo "$PRETTY_NAME")" \
    --arg container_systemd "$(inside systemctl --version | head -n 1)" \
    --arg load_start "$load_start" \
    --arg load_end "$(cut -d' ' -f1-3 /proc/loadavg)" '
    ($samples | split("\n") | map(select(length > 0) | split(" "))) as $rows
    | def kind($k): [$rows[] | select(.[0] == $k)
        | {total: (.[1] | tonumber), receiver: (.[2] | tonumber), systemd: (.[3] | tonumber), pass: (.[4] | tonumber)}];
    {format: 1, date: $date, pushes: $pushes,
     timer_expected_secs: $timer, min_interval_secs: $min_interval,
     package: {file: $deb_file, version: $deb_version, sha256: $deb_sha256,
               gitops_run_version: $gitops_version, source: $deb_source},
     machine: {nproc: $nproc, cpu: $cpu, memory: $memory, kernel: $kernel, os: $os,
               container_os: $container_os, container_systemd: $container_systemd,
               load_start: $load_start, load_end: $load_end},
     samples: {cold: kind("cold"), warm: kind("warm")}}' > "$results.tmp"
mv -f "$results.tmp" "$results"
ok "summary in $results"
step=cleanup
