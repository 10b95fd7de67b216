#!/usr/bin/env python3
"""Write a deterministic `git fast-import` stream for a benchmark repository.

    gen-repo.py small  | git fast-import --quiet      (a few files, 3 commits)
    gen-repo.py medium | git fast-import --quiet      (~3,000 files, 5,000 commits)
    gen-repo.py large  | git fast-import --quiet      (the same files, 10,000 commits)

Everything is a pure function of the arguments: fixed author, committer and
dates, file contents from a fixed-seed LCG. The same stream, hence the same
commit ids, on every machine and every run.
"""

import sys

BRANCH = "refs/heads/main"
IDENT = "Bench <bench@example.invalid>"
EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z

RUN_SH = b"#!/bin/sh\n# Trivial entrypoint of the benchmark repositories.\nexit 0\n"
LOCAL_YML = b"""\
# Trivial playbook for ansible-pull (it looks for local.yml by default).
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: nothing to do
      ansible.builtin.debug:
        msg: noop
"""

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu listen worker timeout retries upstream replicas enabled"
).split()


class Lcg:
    """Numerical Recipes LCG: tiny, portable, deterministic."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def next(self, n):
        self.state = (1664525 * self.state + 1013904223) & 0xFFFFFFFF
        return (self.state >> 8) % n


out = sys.stdout.buffer


def data(blob):
    out.write(b"data %d\n" % len(blob))
    out.write(blob)
    out.write(b"\n")


def commit(n, message, changes, first=False):
    when = EPOCH + n * 600
    out.write(b"commit %s\n" % BRANCH.encode())
    out.write(b"author %s %d +0000\n" % (IDENT.encode(), when))
    out.write(b"committer %s %d +0000\n" % (IDENT.encode(), when))
    data(message.encode() + b"\n")
    if first:
        out.write(b"deleteall\n")
    for path, mode, blob in changes:
        out.write(b"M %s inline %s\n" % (mode.encode(), path.encode()))
        data(blob)
    out.write(b"\n")


def file_lines(rng, count):
    lines = []
    for i in range(count):
        key = WORDS[rng.next(len(WORDS))]
        value = " ".join(WORDS[rng.next(len(WORDS))] for _ in range(1 + rng.next(4)))
        lines.append(f"{key}_{i} = {value} {rng.next(100000)}")
    return lines


def small():
    commit(1, "Initial configuration", [
        ("run.sh", "100755", RUN_SH),
        ("local.yml", "100644", LOCAL_YML),
        ("README.md", "100644", b"# host configuration (benchmark fixture)\n"),
        ("etc/app.conf", "100644", b"listen = 127.0.0.1:8080\nworkers = 2\n"),
        ("etc/limits.conf", "100644", b"nofile = 65536\n"),
        ("files/motd", "100644", b"Managed by gitops.\n"),
    ], first=True)
    commit(2, "Raise workers", [("etc/app.conf", "100644", b"listen = 127.0.0.1:8080\nworkers = 4\n")])
    commit(3, "Add a cron job", [("files/cron.d/cleanup", "100644", b"17 3 * * * root /usr/local/bin/cleanup\n")])


def medium(n_commits=5000, n_files=3000, files_per_add=10):
    rng = Lcg(20240501)
    contents = {}
    paths = []
    for i in range(n_files):
        paths.append(f"svc-{i // 100:02d}/conf.d/{i % 100:03d}-{WORDS[i % len(WORDS)]}.conf")
    adding_commits = n_files // files_per_add
    assert adding_commits < n_commits
    n = 0
    for c in range(adding_commits):
        n += 1
        changes = []
        if c == 0:
            changes += [("run.sh", "100755", RUN_SH), ("local.yml", "100644", LOCAL_YML)]
        for path in paths[c * files_per_add:(c + 1) * files_per_add]:
            lines = file_lines(rng, 20 + rng.next(40))  # 20-60 lines, ~0.5-2 KB
            contents[path] = lines
            changes.append((path, "100644", ("\n".join(lines) + "\n").encode()))
        commit(n, f"Add {changes[-1][0].split('/')[0]} files {c * files_per_add}-{(c + 1) * files_per_add - 1}", changes, first=(c == 0))
    while n < n_commits:
        n += 1
        changes = []
        for _ in range(1 + rng.next(3)):
            path = paths[rng.next(n_files)]
            lines = contents[path]
            line = rng.next(len(lines))
            key = lines[line].split(" = ")[0]
            lines[line] = f"{key} = {WORDS[rng.next(len(WORDS))]} {rng.next(100000)}"
            changes.append((path, "100644", ("\n".join(lines) + "\n").encode()))
        commit(n, f"Tune {changes[0][0]} (change {n})", changes)


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind == "small":
        small()
    elif kind == "medium":
        medium()
    elif kind == "large":
        medium(n_commits=10000)
    else:
        sys.exit("usage: gen-repo.py small|medium|large")
    out.write(b"done\n")
