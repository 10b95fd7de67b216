#!/usr/bin/env python3
"""Turn the results of bench/run.sh into one table: medians, spreads, ratios
gitops-run / baseline, targets with PASS/MISS; print it and write the report.

    report.py RESULTS_DIR OUTPUT.md

RESULTS_DIR holds ID.json (hyperfine --export-json), ID.rss (peak RSS in KiB,
one sample a line), ID.bytes ("requests bytes_sent bytes_received" per no-op
poll, from nginx's access log) and machine.txt (KEY=VALUE).
"""

import json
import os
import statistics
import sys

RES, OUT = sys.argv[1], sys.argv[2]

# What each result ID measured, as shown in the tables.
NAMES = {
    "gitops": "gitops-run",
    "bash": "bash + git CLI (bench/baseline-pass.sh)",
    "ansible": "ansible-pull --only-if-changed",
    "git": "git pull + ./run.sh",
    "clone-git": "git clone + ./run.sh",
    "clone-git-depth1": "git clone --depth 1 + ./run.sh",
}

# (measurement, kind, gitops-run result, baseline result, baseline name, target)
# target: ("ratio", x) means ratio <= x; ("abs", x) means gitops-run value <= x
# (in the row's unit); None: shown for information.
ROWS = [
    ("No-op pass, file://", "time", "noop-file-gitops", "noop-file-bash", NAMES["bash"], ("ratio", 0.5)),
    ("No-op pass, file://", "time", "noop-file-gitops", "noop-file-ansible", NAMES["ansible"], ("ratio", 0.01)),
    ("No-op pass, HTTP", "time", "noop-http-gitops", "noop-http-bash", NAMES["bash"], ("ratio", 0.7)),
    ("No-op pass, HTTP", "time", "noop-http-gitops", "noop-http-ansible", NAMES["ansible"], ("ratio", 0.01)),
    ("Apply one new commit, file://", "time", "apply-file-gitops", "apply-file-git", NAMES["git"], None),
    ("Apply one new commit, HTTP", "time", "apply-http-gitops", "apply-http-git", NAMES["git"], None),
    ("First deployment, medium repo, file://", "time", "clone-file-gitops", "clone-file-git", NAMES["clone-git"], ("ratio", 0.8)),
    ("First deployment, medium repo, file://", "time", "clone-file-gitops", "clone-file-git-depth1", NAMES["clone-git-depth1"], None),
    ("First deployment, medium repo, HTTP", "time", "clone-http-gitops", "clone-http-git", NAMES["clone-git"], ("ratio", 0.8)),
    ("First deployment, medium repo, HTTP", "time", "clone-http-gitops", "clone-http-git-depth1", NAMES["clone-git-depth1"], None),
    ("Peak RSS, no-op pass, file://", "rss", "noop-file-gitops", "noop-file-bash", NAMES["bash"], ("abs", 16.0)),
    ("Peak RSS, no-op pass, HTTP", "rss", "noop-http-gitops", "noop-http-bash", NAMES["bash"], ("abs", 16.0)),
    ("Peak RSS, no-op pass, HTTP", "rss", "noop-http-gitops", "noop-http-ansible", NAMES["ansible"], None),
    ("Peak RSS, first deployment, file://", "rss", "clone-file-gitops", "clone-file-git", NAMES["clone-git"], None),
    ("Peak RSS, first deployment, HTTP", "rss", "clone-http-gitops", "clone-http-git", NAMES["clone-git"], None),
    ("Bytes sent by the server per no-op poll, HTTP", "bytes", "noop-http-gitops", "noop-http-bash", "git fetch (bash + git CLI)", ("ratio", 1.0)),
    ("Bytes sent by the server per no-op poll, HTTP", "bytes", "noop-http-gitops", "noop-http-ansible", NAMES["ansible"], None),
]


def load_machine():
    info = {}
    path = os.path.join(RES, "machine.txt")
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            key, _, value = line.rstrip("\n").partition("=")
            info[key] = value
    return info


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


def fmt_time(s):
    if s < 1.0:
        return f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def fmt_value(kind, v):
    if kind == "time":
        return fmt_time(v)
    if kind == "rss":
        return f"{v:.1f} MiB"
    return f"{v:,.0f} B"


def fmt_spread(kind, xs):
    med = statistics.median(xs)
    if kind == "bytes" and min(xs) == max(xs):
        return fmt_value(kind, med)
    lo, hi = fmt_value(kind, min(xs)), fmt_value(kind, max(xs))
    unit = lo.split(" ")[-1]
    if hi.endswith(" " + unit) and lo.endswith(" " + unit):
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
    m = load_machine()
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
    for label, kind, gid, bid, bname, target in ROWS:
        g, b = samples(kind, gid), samples(kind, bid)
        gv = fmt_spread(kind, g) if g else "n/a"
        bv = fmt_spread(kind, b) if b else "n/a"
        ratio = None
        if g and b and statistics.median(b) > 0:
            ratio = statistics.median(g) / statistics.median(b)
        rv = fmt_ratio(ratio) if ratio is not None else "n/a"
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

    details = [
        "| Result | Command | Runs | Median | Mean ± σ | Min | Max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(os.listdir(RES)):
        if not name.endswith(".json"):
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
    net = ["| Result | Polls | Requests per poll | Bytes sent by nginx (median) | Bytes received by nginx (median) |", "|---|---|---|---|---|"]
    for name in sorted(os.listdir(RES)):
        if name.endswith(".bytes"):
            xs = samples("bytes", name[:-6])
            rq = requests_per_poll(name[:-6])
            if xs and rq:
                net.append(f"| {name[:-6]} | {len(xs)} | {rq[0]:g} | {statistics.median(xs):,.0f} B | {rq[1]:,.0f} B |")

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
        f"{int(m.get('medium_pack', '0') or 0) / 1024:.1f} MiB packed.",
        "- Transports: `file://` (both tools spawn `git-upload-pack`), and HTTP: nginx + fcgiwrap +",
        "  `git http-backend` on 127.0.0.1, `GIT_PROTOCOL` passed through (protocol v2).",
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
        "  directory from an earlier pass; `bench/baseline-pass.sh` in a full clone (`git fetch`",
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
        "",
        "## Machine",
        "",
    ]
    lines += machine
    lines += ["", "## All timings", ""]
    lines += details
    lines += ["", "## Peak memory", ""]
    lines += mem
    lines += ["", "## Traffic per no-op poll (HTTP)", ""]
    lines += net
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
