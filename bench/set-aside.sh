#!/usr/bin/env bash
# hyperfine --prepare helper: move DIR out of the way (one rename) instead of
# deleting it. Deleting thousands of files right before a run that creates
# thousands makes ext4 without a journal skip every recently freed inode
# (ialloc.c: recently_deleted()), which can cost a second of system time and
# would measure the file system, not the tools. run.sh deletes the set-aside
# directories once all measurements are done.
#
#   set-aside.sh DIR
set -euo pipefail
dir=${1%/}
[ -e "$dir" ] || exit 0
mv "$dir" "$(dirname "$dir")/.aside-$(basename "$dir")-$(date +%s%N)"
