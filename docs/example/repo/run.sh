#!/bin/sh
# Example entrypoint: writes a message-of-the-day fragment describing the deployed
# commit. gitops-run runs it from the checked-out tree of the commit.
set -eu

# Where to write; a real host would use /etc/motd.d. The demo points it at a temp dir.
motd_dir="${MOTD_DIR:-/etc/motd.d}"
mkdir -p "$motd_dir"

tmp="$motd_dir/.gitops-run.tmp"
{
    cat banner.txt
    echo "commit:   ${GITOPS_COMMIT}"
    echo "previous: ${GITOPS_PREVIOUS_COMMIT:-none}"
    echo "reason:   ${GITOPS_REASON}"
    echo "branch:   ${GITOPS_BRANCH}"
} > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$motd_dir/gitops-run"
echo "wrote $motd_dir/gitops-run"
