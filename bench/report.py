#!/usr/bin/env python3
"""Turn the results of bench/run.sh into one table: medians, spreads, ratios
gitops-run / baseline, targets with PASS/MISS; print it and write the report.

    report.py RESULTS_DIR OUTPUT.md
    report.py --check-push SUMMARY.json   (exit 1 with the reason if unusable)

RESULTS_DIR holds ID.json (hyperfine --export-json), ID.rss (peak RSS in KiB,
one sample a line), ID.bytes ("requests bytes_sent bytes_received" per run over
HTTP, from nginx's access log), ID.fsync ("all fsync fdatasync sync_file_range"
calls per run, from strace -c), ID.cpu (the server's CPU time per no-op poll in
ns, one batch a line), ID.commits (commits in the repository a first deployment
left behind), machine.txt (KEY=VALUE) and verify.txt (KEY=VALUE, the parameters
of bench/verify.sh, read as verify_KEY) and push-latency.json (the summary of
bench/push-latency.sh, described at the top of that script; machine.txt's
push_source says whether this run measured it or took it from an earlier run).
Rows whose results are all missing (a part skipped with a BENCH_* knob) are
left out.
"""

import json
import os
import statistics
import sys

RES = OUT = None  # set by main()

# The timer's period: 5 minutes after the previous pass, plus a random delay of
# up to 60 s (mean 30 s). See docs/fleet.md, "Load on the Git server".
INTERVAL_SECS = 300
MEAN_PERIOD_SECS = 330

# What each result ID measured, as shown in the tables.
NAMES = {
    "gitops": "gitops-run",
    "bash": "bash + git CLI (bench/baseline-pass.sh)",
    "ansible": "ansible-pull --only-if-changed",
    "git": "git pull + ./run.sh",
    "clone-git": "git clone + ./run.sh",
    "clone-git-depth1": "git clone --depth 1 + ./run.sh",
    "fetch": "git fetch (bash + git CLI)",
    "v2": "gitops-run over protocol v2",
    "unverified": "the same pass without verification",
}


def verify_commits(m):
    """The signed commits the verifying pass applies (bench/verify.sh), or None."""
    try:
        return int(m["verify_commits"])
    except (KeyError, ValueError):
        return None


def before_name(m):
    """The "before" binary, as shown in the tables."""
    return f"gitops-run at {m.get('before', '?').split(' ')[0]} (before)"

# (measurement, kind, gitops-run result, baseline result, baseline name, target)
# target: ("ratio", x) means ratio <= x; ("abs", x) means gitops-run value <= x
# (in the row's unit); None: shown for information.
def rows(m):
    before = before_name(m)
    n = verify_commits(m)
    signed = f"{n:,}" if n is not None else "?"
    return [
        ("No-op pass, file://", "time", "noop-file-gitops", "noop-file-bash", NAMES["bash"], ("ratio", 0.25)),
        ("No-op pass, file://, before", "time", "noop-file-before", "noop-file-bash", NAMES["bash"], None),
        ("No-op pass, file://, now / before", "time", "noop-file-gitops", "noop-file-before", before, None),
        ("No-op pass, file://", "time", "noop-file-gitops", "noop-file-ansible", NAMES["ansible"], ("ratio", 0.01)),
        ("No-op pass, HTTP", "time", "noop-http-gitops", "noop-http-bash", NAMES["bash"], ("ratio", 0.7)),
        ("No-op pass, HTTP", "time", "noop-http-gitops", "noop-http-ansible", NAMES["ansible"], ("ratio", 0.01)),
        ("No-op pass, ssh", "time", "noop-ssh-gitops", "noop-ssh-bash", NAMES["bash"], None),
        ("fsync calls per no-op pass, file://", "count", "noop-file-gitops", "noop-file-before", before, None),
        ("fsync calls per no-op pass, file://", "count", "noop-file-gitops", "noop-file-bash", NAMES["bash"], None),
        ("Apply one new commit, file://", "time", "apply-file-gitops", "apply-file-git", NAMES["git"], None),
        ("Apply one new commit, HTTP", "time", "apply-http-gitops", "apply-http-git", NAMES["git"], None),
        ("First deployment, medium repo, file://", "time", "clone-file-gitops", "clone-file-git", NAMES["clone-git"], ("ratio", 0.8)),
        ("First deployment, medium repo, file://", "time", "clone-file-gitops", "clone-file-git-depth1", NAMES["clone-git-depth1"], None),
        ("First deployment, medium repo, HTTP", "time", "clone-http-gitops", "clone-http-git", NAMES["clone-git"], ("ratio", 0.8)),
        ("First deployment, medium repo, HTTP", "time", "clone-http-gitops", "clone-http-git-depth1", NAMES["clone-git-depth1"], None),
        ("First deployment, medium repo, HTTP protocol v0", "time", "clone-v0-gitops", "clone-v0-git-depth1", NAMES["clone-git-depth1"], None),
        ("First deployment, medium repo, HTTP protocol v0", "time", "clone-v0-gitops", "clone-http-gitops", NAMES["v2"], None),
        ("First deployment, large repo, HTTP", "time", "clone-http-large-gitops", "clone-http-large-git-depth1", NAMES["clone-git-depth1"], None),
        ("First deployment, large repo, HTTP protocol v0", "time", "clone-v0-large-gitops", "clone-v0-large-git-depth1", NAMES["clone-git-depth1"], None),
        ("First deployment, large repo, HTTP protocol v0", "time", "clone-v0-large-gitops", "clone-http-large-gitops", NAMES["v2"], None),
        ("Peak RSS, no-op pass, file://", "rss", "noop-file-gitops", "noop-file-bash", NAMES["bash"], ("abs", 16.0)),
        ("Peak RSS, no-op pass, HTTP", "rss", "noop-http-gitops", "noop-http-bash", NAMES["bash"], ("abs", 16.0)),
        ("Peak RSS, no-op pass, HTTP", "rss", "noop-http-gitops", "noop-http-ansible", NAMES["ansible"], None),
        ("Peak RSS, first deployment, file://", "rss", "clone-file-gitops", "clone-file-git", NAMES["clone-git"], None),
        ("Peak RSS, first deployment, HTTP", "rss", "clone-http-gitops", "clone-http-git", NAMES["clone-git"], None),
        ("Peak RSS, first deployment, HTTP protocol v0", "rss", "clone-v0-gitops", "clone-http-gitops", NAMES["v2"], None),
        ("Bytes sent by the server per no-op poll, HTTP", "bytes", "noop-http-gitops", "noop-http-bash", NAMES["fetch"], ("ratio", 1.0)),
        ("Bytes sent by the server per no-op poll, HTTP", "bytes", "noop-http-gitops", "noop-http-ansible", NAMES["ansible"], None),
        ("Bytes sent by the server, first deployment, medium repo, HTTP", "bytes", "clone-http-gitops", "clone-http-git-depth1", NAMES["clone-git-depth1"], None),
        ("Bytes sent by the server, first deployment, medium repo, HTTP protocol v0", "bytes", "clone-v0-gitops", "clone-v0-git-depth1", NAMES["clone-git-depth1"], None),
        ("Bytes sent by the server, first deployment, large repo, HTTP", "bytes", "clone-http-large-gitops", "clone-http-large-git-depth1", NAMES["clone-git-depth1"], None),
        ("Bytes sent by the server, first deployment, large repo, HTTP protocol v0", "bytes", "clone-v0-large-gitops", "clone-v0-large-git-depth1", NAMES["clone-git-depth1"], None),
        ("Server CPU per no-op poll, HTTP", "cpu", "cpu-http-gitops", "cpu-http-git", NAMES["fetch"], None),
        ("Server CPU per no-op poll, ssh", "cpu", "cpu-ssh-gitops", "cpu-ssh-git", NAMES["fetch"], None),
        (f"Apply a tip {signed} signed commits ahead, `--verify all`, file://", "time",
         "verify-apply-all", "verify-apply-none", NAMES["unverified"], None),
        ("No-op pass, keys configured, `--verify all`, file://", "time",
         "verify-noop-all", "verify-noop-none", NAMES["unverified"], None),
    ]


PUSH_FILE = "push-latency.json"
PUSH_KINDS = ("cold", "warm")
PUSH_STAGES = ("receiver", "systemd", "pass")
# What the push-to-entrypoint rows compare with: a push waits on average half
# the shipped timer's interval (OnUnitInactiveSec=5min) for a pass.
PUSH_BASELINE = "the timer's expected wait (OnUnitInactiveSec=5min: half of 5 min)"


def load_push(path):
    """The summary of bench/push-latency.sh at PATH: the parsed object, its
    samples checked (each kind a non-empty list of objects with a finite,
    non-negative number for total and each stage). Raises ValueError saying
    what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ValueError(f"failed to read the push-latency summary {path}: {e.strerror}") from e
    except ValueError as e:
        raise ValueError(f"failed to parse the push-latency summary {path}: {e}") from e
    where = f"the push-latency summary {path}"
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise ValueError(f"{where} is not of format 1 (bench/push-latency.sh writes it)")
    expected = doc.get("timer_expected_secs")
    if not isinstance(expected, (int, float)) or isinstance(expected, bool) or not expected > 0:
        raise ValueError(f"{where}: timer_expected_secs is not a positive number")
    samples = doc.get("samples")
    if not isinstance(samples, dict):
        raise ValueError(f"{where}: no samples object")
    for kind in PUSH_KINDS:
        xs = samples.get(kind)
        if not isinstance(xs, list) or not xs:
            raise ValueError(f"{where}: no {kind} samples")
        for i, x in enumerate(xs):
            for key in ("total",) + PUSH_STAGES:
                v = x.get(key) if isinstance(x, dict) else None
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < float("inf"):
                    raise ValueError(f"{where}: {kind} sample {i + 1} has no valid {key!r}")
    for key in ("package", "machine"):
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
    return doc


def push_values(doc, kind, key):
    """One column of the push samples of KIND: total or a stage, in seconds."""
    return [float(x[key]) for x in doc["samples"][kind]]


def push_rows(doc):
    """The Results rows of the push-to-entrypoint times, in the table's columns."""
    expected = float(doc["timer_expected_secs"])
    out = []
    for kind, how in (("cold", "socket-activated receiver"), ("warm", "receiver already running")):
        xs = push_values(doc, kind, "total")
        ratio = statistics.median(xs) / expected
        out.append(f"| Push to entrypoint, {kind} ({how}) | {fmt_spread('time', xs)} | {PUSH_BASELINE} | "
                   f"{expected:g} s | {fmt_ratio(ratio)} | — | — |")
    return out


def push_stage_table(doc):
    table = [
        "| Kind | Pushes | Push to entrypoint | receiver | systemd | pass |",
        "|---|---|---|---|---|---|",
    ]
    for kind in PUSH_KINDS:
        cols = [fmt_spread("time", push_values(doc, kind, key)) for key in ("total",) + PUSH_STAGES]
        table.append(f"| {kind} | {len(doc['samples'][kind])} | " + " | ".join(cols) + " |")
    return table


def push_origin(m, doc):
    """Where the push figures come from, as a sentence."""
    date = doc.get("date", "?")
    if m.get("push_source") == "run":
        return f"measured in this run (`BENCH_PUSH_LATENCY=1`) at {date}"
    return (f"not measured in this run: taken from an earlier run's summary "
            f"(`BENCH_PUSH_RESULTS={m.get('push_file', '?')}`), measured at {date}")


def load_machine():
    info = {}
    for name, prefix in (("machine.txt", ""), ("verify.txt", "verify_")):
        path = os.path.join(RES, name)
        if os.path.exists(path):
            for line in open(path, encoding="utf-8"):
                key, _, value = line.rstrip("\n").partition("=")
                info[prefix + key] = value
    return info


def verify_per_commit_us(m):
    """What verifying one commit adds to the applying pass, in µs, from the medians
    of bench/verify.sh's two applying passes; None when they were not run."""
    n = verify_commits(m)
    on, off = samples("time", "verify-apply-all"), samples("time", "verify-apply-none")
    if not n or not on or not off:
        return None
    return (statistics.median(on) - statistics.median(off)) / n * 1e6


def samples(kind, rid):
    """The samples of one result, in the row's unit (s, MB, bytes), or None."""
    try:
        if kind == "time":
            with open(os.path.join(RES, rid + ".json"), encoding="utf-8") as f:
                return json.load(f)["results"][0]["times"]
        if kind == "rss":
            with open(os.path.join(RES, rid + ".rss"), encoding="utf-8") as f:
                return [int(l) / 1024.0 for l in f if l.strip()]  # KiB -> MiB
        if kind == "bytes":
            with open(os.path.join(RES, rid + ".bytes"), encoding="utf-8") as f:
                return [int(l.split()[1]) for l in f if l.strip()]
        if kind == "count":
            with open(os.path.join(RES, rid + ".fsync"), encoding="utf-8") as f:
                return [int(l.split()[0]) for l in f if l.strip()]
        if kind == "cpu":
            with open(os.path.join(RES, rid + ".cpu"), encoding="utf-8") as f:
                return [int(l) / 1e9 for l in f if l.strip()]  # ns -> s
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return None


def requests_per_poll(rid):
    try:
        with open(os.path.join(RES, rid + ".bytes"), encoding="utf-8") as f:
            rows = [l.split() for l in f if l.strip()]
        return statistics.median(int(r[0]) for r in rows), statistics.median(int(r[2]) for r in rows)
    except (OSError, ValueError, IndexError, statistics.StatisticsError):
        return None


def commits(rid):
    try:
        with open(os.path.join(RES, rid + ".commits"), encoding="utf-8") as f:
            return f"{int(f.read().strip()):,}"
    except (OSError, ValueError):
        return "—"


def fmt_time(s):
    if s < 1.0:
        return f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def fmt_value(kind, v):
    if kind == "time":
        return fmt_time(v)
    if kind == "cpu":
        return f"{v * 1000:.2f} ms"
    if kind == "rss":
        return f"{v:.1f} MiB"
    if kind == "count":
        return f"{v:g}"
    if v >= 1024 * 1024:
        return f"{v / 1048576:.2f} MiB"
    if v >= 100 * 1024:
        return f"{v / 1024:.0f} KiB"
    return f"{v:,.0f} B"


def fmt_spread(kind, xs):
    med = statistics.median(xs)
    if kind in ("bytes", "count") and min(xs) == max(xs):
        return fmt_value(kind, med)
    lo, hi = fmt_value(kind, min(xs)), fmt_value(kind, max(xs))
    unit = lo.split(" ")[-1]
    if " " in lo and hi.endswith(" " + unit) and lo.endswith(" " + unit):
        lo = lo[: -len(unit) - 1]
    return f"{fmt_value(kind, med)} ({lo}–{hi})"


def fmt_ratio(r):
    if r < 0.01:
        return f"{r:.4f}x ({1 / r:,.0f}x faster)" if r > 0 else "0x"
    if r < 0.1:
        return f"{r:.3f}x ({1 / r:.0f}x faster)"
    return f"{r:.2f}x"


def fmt_target(kind, target):
    if target is None:
        return "—"
    how, x = target
    if how == "abs":
        return f"≤ {x:g} MiB" if kind == "rss" else f"≤ {x:g}"
    if x <= 0.01:
        return f"≥ {1 / x:g}x faster"
    return f"≤ {x:g}x"


def main():
    global RES, OUT
    if len(sys.argv) == 3 and sys.argv[1] == "--check-push":
        try:
            load_push(sys.argv[2])
        except ValueError as e:
            sys.exit(f"report.py: {e}")
        return
    if len(sys.argv) != 3:
        sys.exit("usage: report.py RESULTS_DIR OUTPUT.md | report.py --check-push SUMMARY.json")
    RES, OUT = sys.argv[1], sys.argv[2]
    m = load_machine()
    push = None
    if os.path.exists(os.path.join(RES, PUSH_FILE)):
        try:
            push = load_push(os.path.join(RES, PUSH_FILE))
        except ValueError as e:
            sys.exit(f"report.py: {e}")
    commands = {}
    if os.path.exists(os.path.join(RES, "commands.tsv")):
        for line in open(os.path.join(RES, "commands.tsv"), encoding="utf-8"):
            rid, _, cmd = line.rstrip("\n").partition("\t")
            commands[rid] = cmd
    table = [
        "| Measurement | gitops-run | Baseline | Baseline value | Ratio gitops-run / baseline | Target | Result |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for label, kind, gid, bid, bname, target in rows(m):
        g, b = samples(kind, gid), samples(kind, bid)
        if not g and not b:
            continue  # a part of the run that was skipped
        gv = fmt_spread(kind, g) if g else "n/a"
        bv = fmt_spread(kind, b) if b else "n/a"
        ratio = None
        if g and b and statistics.median(b) > 0:
            ratio = statistics.median(g) / statistics.median(b)
        rv = fmt_ratio(ratio) if ratio is not None else "n/a"
        if g and b and statistics.median(b) == 0:
            rv = "— (baseline 0)"
        if target is None:
            result = "—"
        elif not g or (target[0] == "ratio" and ratio is None):
            result = "n/a"
        else:
            how, x = target
            value = ratio if how == "ratio" else statistics.median(g)
            ok = value <= x
            result = "PASS" if ok else "MISS"
            if not ok:
                verdicts.append((label, bname, how, x, value))
        table.append(f"| {label} | {gv} | {bname} | {bv} | {rv} | {fmt_target(kind, target)} | {result} |")
    if push is not None:
        table += push_rows(push)

    details = [
        "| Result | Command | Runs | Median | Mean ± σ | Min | Max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(os.listdir(RES)):
        if not name.endswith(".json") or name == PUSH_FILE:
            continue
        with open(os.path.join(RES, name), encoding="utf-8") as f:
            r = json.load(f)["results"][0]
        cmd = commands.get(name[:-5], r["command"])
        t = r["times"]
        details.append(
            f"| {name[:-5]} | `{shorten(cmd, m)}` | {len(t)} | {fmt_time(statistics.median(t))} | "
            f"{fmt_time(statistics.mean(t))} ± {fmt_time(statistics.stdev(t) if len(t) > 1 else 0)} | "
            f"{fmt_time(min(t))} | {fmt_time(max(t))} |"
        )
    mem = ["| Result | Samples | Median | Min | Max |", "|---|---|---|---|---|"]
    for name in sorted(os.listdir(RES)):
        if name.endswith(".rss"):
            xs = samples("rss", name[:-4])
            if xs:
                mem.append(f"| {name[:-4]} | {len(xs)} | {statistics.median(xs):.1f} MiB | {min(xs):.1f} MiB | {max(xs):.1f} MiB |")
    net = ["| Result | Runs | Requests per run | Bytes sent by nginx (median) | Bytes received by nginx (median) | Commits fetched |",
           "|---|---|---|---|---|---|"]
    for name in sorted(os.listdir(RES)):
        if name.endswith(".bytes"):
            xs = samples("bytes", name[:-6])
            rq = requests_per_poll(name[:-6])
            if xs and rq:
                net.append(f"| {name[:-6]} | {len(xs)} | {rq[0]:g} | {statistics.median(xs):,.0f} B | {rq[1]:,.0f} B "
                           f"| {commits(name[:-6])} |")
    syncs = ["| Result | Runs | fsync | fdatasync | sync_file_range |", "|---|---|---|---|---|"]
    for name in sorted(os.listdir(RES)):
        if name.endswith(".fsync"):
            with open(os.path.join(RES, name), encoding="utf-8") as f:
                per_run = [[int(x) for x in l.split()] for l in f if l.strip()]
            if per_run:
                cols = [fmt_spread("count", [r[k] for r in per_run]) for k in (1, 2, 3)]
                syncs.append(f"| {name[:-6]} | {len(per_run)} | {cols[0]} | {cols[1]} | {cols[2]} |")
    server = [
        "| Transport | Client | Server CPU per no-op poll | Hosts per 5-minute interval on one core | "
        "Hosts on one core at the timer's mean period (~5.5 min) |",
        "|---|---|---|---|---|",
    ]
    for transport, label in (("http", "HTTP (nginx + fcgiwrap + git http-backend)"), ("ssh", "ssh (sshd + git-shell)")):
        for client, cname in (("gitops", "gitops-run"), ("git", NAMES["fetch"])):
            xs = samples("cpu", f"cpu-{transport}-{client}")
            if xs and statistics.median(xs) > 0:
                med = statistics.median(xs)
                server.append(f"| {label} | {cname} | {fmt_spread('cpu', xs)} | {INTERVAL_SECS / med:,.0f} | "
                              f"{MEAN_PERIOD_SECS / med:,.0f} |")

    machine = [
        "| | |",
        "|---|---|",
        f"| CPU | {m.get('cpu', '?')} ({m.get('nproc', '?')} cores available, `nproc`) |",
        f"| Memory | {m.get('memory', '?')} |",
        f"| Load average (1, 5, 15 min) | {m.get('load', '?')} |",
        f"| Kernel | {m.get('kernel', '?')} |",
        f"| OS | {m.get('os', '?')} |",
        f"| gitops-run | revision {m.get('revision', '?')}, `cargo build --release` (rustc {m.get('rustc', '?')}) |",
        f"| git | {m.get('git', '?')} |",
        f"| ansible | {m.get('ansible', '?')} |",
        f"| nginx | {m.get('nginx', '?')}, fcgiwrap {m.get('fcgiwrap', '?')} |",
        f"| OpenSSH server | {m.get('sshd', '?')} |",
        f"| hyperfine | {m.get('hyperfine', '?')} |",
    ]

    lines = []
    lines += [
        "# Benchmarks",
        "",
        "gitops-run against what users otherwise run, on the same generated repositories,",
        "in one run of `bench/run.sh`. **Generated file: do not edit; run the command below",
        "to refresh it.**",
        "",
        f"- Command: `{m.get('command', 'bash bench/run.sh')}` (also `just bench`), "
        f"{m.get('date', '?')}; the run took {m.get('duration', '?')} s after the release build.",
        f"- hyperfine: {m.get('runs_fast', '?')} runs after {m.get('warmup', '?')} warm-up run(s) for the fast commands, "
        f"{m.get('runs_slow', '?')} runs after 1 warm-up for ansible-pull and first deployments; "
        "no shell (`-N`). Values are medians, with (min–max) over the runs.",
        f"- Repositories (`bench/gen-repo.py`, `git fast-import`, fixed authors and dates): small, "
        f"{m.get('small_files', '?')} files (`run.sh`, `local.yml`, a few config files); "
        f"medium, {m.get('medium_commits', '?')} commits, {m.get('medium_files', '?')} files, "
        f"{int(m.get('medium_pack', '0') or 0) / 1024:.1f} MiB packed"
        + (f"; large, {m['large_commits']} commits, {m['large_files']} files (the medium repository's files, "
           f"twice the history), {int(m.get('large_pack', '0') or 0) / 1024:.1f} MiB packed." if m.get("large_commits") else "."),
        "- Transports: `file://` (both tools spawn `git-upload-pack`); HTTP: nginx + fcgiwrap +",
        "  `git http-backend` on 127.0.0.1, `GIT_PROTOCOL` passed through (protocol v2), and the same",
        "  repositories under `/v0/` without it (*HTTP protocol v0*: the `Git-Protocol` header is",
        "  not passed on, as behind a proxy or server that drops it, so `git http-backend` answers",
        "  with protocol v0); ssh: OpenSSH `sshd` on 127.0.0.1, logging in a system user whose",
        "  login shell is `git-shell` (made for the run), protocol v2.",
    ]
    if m.get("before"):
        lines += [
            f"- *Before*: gitops-run built from `{m['before']}`",
            "  (`BENCH_BEFORE`), the revision before the last round of work, in a `git worktree`",
            "  with its own target directory.",
        ]
    if verify_commits(m) is not None:
        lines += [
            f"- Signature verification (`bench/verify.sh`, the last part of the run; `BENCH_VERIFY=0`",
            f"  skips it): its own `file://` origin with {verify_commits(m):,} commits on top of a deployed one,",
            "  each signed by `git commit-tree -S` with an ed25519 SSH key (`gpg.format=ssh`); hyperfine",
            f"  {m.get('verify_runs_apply', '?')} runs of the applying pass and {m.get('verify_runs_noop', '?')} of "
            f"the no-op pass, after {m.get('verify_warmup', '?')} warm-up run(s) each.",
        ]
    if push is not None:
        pm = push["machine"]
        lines += [
            f"- Push to entrypoint (`bench/push-latency.sh`): {push_origin(m, push)}, on "
            f"{pm.get('nproc', '?')} cores ({pm.get('cpu', '?')}), {pm.get('kernel', '?')}, load average "
            f"{pm.get('load_start', '?')} at its start and {pm.get('load_end', '?')} at its end. Details under",
            "  \"Push to entrypoint, by stage\".",
        ]
    lines += [
        "",
        "## Results",
        "",
    ]
    lines += table
    lines += [
        "",
        "Ratios are of medians. \"≥ 100x faster\" is a ratio ≤ 0.01. Targets are goals shown",
        "for information, not assertions.",
        "",
    ]
    per_commit = verify_per_commit_us(m)
    if per_commit is not None:
        lines += [
            f"Verifying signatures adds about {per_commit:.0f} µs per verified commit to a pass",
            f"((with − without) / {verify_commits(m):,}, from the medians); a pass that finds nothing",
            "new verifies nothing.",
            "",
        ]
    if verdicts:
        lines.append("Missed targets:")
        lines.append("")
        for label, bname, how, x, value in verdicts:
            if how == "ratio":
                lines.append(f"- {label} vs {bname}: ratio {value:.3f}, target ≤ {x:g} "
                             f"({(value / x - 1) * 100:.0f}% over).")
            else:
                lines.append(f"- {label}: {value:.1f}, target ≤ {x:g} ({(value / x - 1) * 100:.0f}% over).")
        lines.append("")
    lines += [
        "What each row runs:",
        "",
        "- *No-op pass*: the remote is unchanged since the last pass. gitops-run with a state",
        "  directory from an earlier pass (every pass writes its Prometheus textfile, here into",
        "  the work directory: `GITOPS_METRICS_FILE`); `bench/baseline-pass.sh` in a full clone (`git fetch`",
        "  of the branch, `rev-parse` of HEAD and upstream, `merge-base`, compare: nothing to do);",
        "  `ansible-pull -U URL -C main -d DIR -i localhost, --only-if-changed local.yml` on a",
        "  checkout it made before (it quits with \"Repository has not changed\").",
        "- *Apply one new commit*: before each run, `bench/add-commit.sh` adds one commit to the",
        "  origin (hyperfine `--prepare`), so every run, warm-ups included, applies exactly one",
        "  commit with a trivial `run.sh`. gitops-run checks it out into a new tree, runs",
        "  `run.sh`, switches `current`; the baseline is `git pull --ff-only` then `./run.sh`.",
        "- *First deployment*: an empty state directory (clone directory) before each run; the",
        "  previous one is renamed away, not deleted (`bench/set-aside.sh`), so that the file",
        "  system's handling of mass deletions is not measured.",
        "  gitops-run fetches shallow (depth 1), checks out the files, runs `run.sh`; the",
        "  baselines `git clone` (full history) or `git clone --depth 1`, then `./run.sh`.",
        "- *Peak RSS*: `/usr/bin/time -f %M`, i.e. `ru_maxrss` of the process tree (the largest",
        f"  of the command and its waited-for children: over `file://` that includes",
        f"  `git-upload-pack`), median of {m.get('polls', '?')} runs (3 for ansible-pull and first deployments).",
        "- *Bytes per no-op poll*: the sum of nginx's `$bytes_sent` (headers and body) over",
        "  the requests of one poll.",
        "- *No-op pass, before*: the same no-op pass by gitops-run built at the earlier revision,",
        "  with its own state directory, timed in the same hyperfine run as gitops-run and the",
        "  bash baseline (all runs of each command in turn); \"now / before\" divides the two.",
        "- *fsync calls per no-op pass*: `strace -f -c -e trace=fsync,fdatasync,sync_file_range`",
        "  of one pass, the process tree included (over `file://` that is `git-upload-pack` too);",
        f"  the sum of the three calls, median of {m.get('polls', '?')} passes. Details below.",
        "- *No-op pass, ssh*: the same passes against the private `sshd` (gitops-run with",
        "  `--ssh-key` and `--known-hosts`; the baseline's clone with the same ssh options in",
        "  `core.sshCommand`): every poll is an ssh connection with a key exchange.",
        "- *First deployment, HTTP protocol v0*: gitops-run and `git clone --depth 1` against the",
        "  `/v0/` location, beside gitops-run over protocol v2 (the same repository and server).",
        "  Over v0 gitops-run does not get a depth-1 fetch and brings the whole branch once",
        "  (docs/design.md, step 4); `git clone --depth 1` still gets one commit. *Bytes sent by",
        "  the server, first deployment* sums nginx's `$bytes_sent` over the requests of one first",
        "  deployment; the traffic table below also gives the commits each client ended up with.",
        "  The *large* repository has the medium one's files and twice its history.",
        "- *Server CPU per no-op poll*: the CPU time of the Git server's processes, from the CPU",
        f"  counter of a cgroup ({m.get('cgroup', '?')}) that the server runs in, read before and",
        "  after a batch of no-op polls and divided by the polls. Over HTTP the cgroup holds nginx,",
        "  fcgiwrap and every `git http-backend` and `git upload-pack` they start; over ssh `sshd`",
        "  (listener and per-connection processes), and below it `git-shell` (the login shell of",
        "  the user the key logs in as) and `git upload-pack`. The client runs outside the cgroup",
        "  on the same machine; its CPU is not counted, nor is the kernel's network work done in",
        f"  the client's context. Median of {m.get('cpu_batches', '?')} batches of "
        f"{m.get('cpu_polls', '?')} polls, (min–max) over the batches.",
        "- *`--verify all`* (`bench/verify.sh`): gitops-run with `--allowed-signers` (one ed25519",
        "  key) and `--verify all`, against the same pass without either. *Apply a tip ... signed",
        "  commits ahead*: before each run (hyperfine `--prepare`) the state directory is replaced",
        "  by a copy of one that has the first commit deployed, so every run fetches the commits",
        "  on top, verifies each of them in-process (with `--verify all`), checks out the tip and",
        "  runs its trivial `run.sh`. *No-op pass, keys configured*: the tip is deployed and the",
        "  branch has not moved, so there is nothing to verify: the row shows what configuring",
        "  the keys costs such a pass.",
    ]
    if push is not None:
        lines += [
            "- *Push to entrypoint* (`bench/push-latency.sh`, docs/receive.md \"Latency\"): the Debian",
            "  package installed in a Debian container booted with `systemd-nspawn`, the push receiver",
            "  set up through the shipped units (`gitops-run-receiver.socket`, `gitops-run-trigger.path`)",
            "  and the timer disabled. Each push is one new commit and one signed GitHub push event sent",
            "  with `curl`, timed until the first line of the commit's `run.sh` records the time; stages",
            "  from the container's journal: *receiver* (request to trigger file written), *systemd*",
            "  (trigger to `gitops-run.service` starting), *pass* (the unit's start to the",
            f"  entrypoint's: fetch, checkout). {push.get('pushes', '?')} pushes of each kind: *cold* with the",
            "  receiver stopped before the request (the socket starts it, as after a minute without",
            f"  pushes), *warm* with it still running (more than its {push.get('min_interval_secs', '?')} s `--min-interval` after the",
            f"  previous request). The baseline is the {push['timer_expected_secs']:g} s a push waits on average for the shipped",
            "  timer's next pass, not counting its random delay of up to 60 s.",
        ]
    lines += [""]
    if push is not None:
        pp, pm = push["package"], push["machine"]
        lines += ["## Push to entrypoint, by stage", ""]
        lines += [
            "Median (min–max) over the pushes of each kind; the three stages of a push add up to its",
            "push-to-entrypoint time (see \"What each row runs\"). The package: "
            f"`{pp.get('file', '?')}` ({pp.get('gitops_run_version', '?')}; {pp.get('source', '?')}; "
            f"sha256 {str(pp.get('sha256', '?'))[:12]}…), in a {pm.get('container_os', '?')} container "
            f"({pm.get('container_systemd', '?')}); host: {pm.get('os', '?')}, {pm.get('memory', '?')} of memory.",
            "",
        ]
        lines += push_stage_table(push)
        lines += [""]
    lines += [
        "## Machine",
        "",
    ]
    lines += machine
    lines += ["", "## All timings", ""]
    lines += details
    lines += ["", "## Peak memory", ""]
    lines += mem
    lines += ["", "## Traffic per run (HTTP)", ""]
    lines += [
        "Per no-op poll (`noop-*`) and per first deployment (`clone-*`; `clone-v0-*` over protocol",
        "v0, the others over v2). Commits fetched: the commits in the repository the first",
        "deployment left (gitops-run's cache, the clone).",
        "",
    ]
    lines += net
    if len(syncs) > 2:
        lines += ["", "## fsync calls per no-op pass (file://)", ""]
        lines += ["Calls per pass, median (min–max) over the passes, `strace -f -c`.", ""]
        lines += syncs
    if len(server) > 2:
        lines += ["", "## Server cost per poll", ""]
        lines += [
            "CPU time the Git server spends on one no-op poll (see \"What each row runs\"), and how",
            f"many hosts one core of this machine serves: {INTERVAL_SECS} s / CPU per poll for a",
            f"5-minute interval, and {MEAN_PERIOD_SECS} s / CPU per poll at the mean period of `gitops-run.timer`",
            "(5 minutes after the previous pass plus a random delay of up to 60 s). Only the",
            "server's processes are counted, not the network nor the client.",
            "",
        ]
        lines += server
    lines.append("")
    # Profiling notes and before/after figures are written by hand, kept beside this
    # script, and carried into every regenerated report.
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile.md")
    if os.path.exists(notes):
        with open(notes, encoding="utf-8") as f:
            lines += ["", f.read().rstrip(), ""]

    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(table))
    for label, bname, how, x, value in verdicts:
        print(f"MISS: {label} vs {bname}: {value:.3f} (target ≤ {x:g})")


def shorten(cmd, m):
    """Commands without the machine-specific work directory prefix."""
    work = m.get("work", "")
    if work:
        cmd = cmd.replace(work + "/", "$WORK/")
    root = m.get("root", "")
    if root:
        cmd = cmd.replace(root + "/", "")
    return cmd.replace("|", "\\|")


if __name__ == "__main__":
    main()
