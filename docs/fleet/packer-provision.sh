#!/bin/sh
# Puts gitops-run into an image built by Packer (a Debian or Ubuntu guest):
# run as root by the "shell" provisioner of docs/fleet/packer.pkr.hcl, after
# its "file" provisioners uploaded the package, the deploy key and the Git
# server's host key to /tmp. See docs/fleet.md ("First boot").
#
# No pass may run in the image: its state (the deployed commit, the trees, the
# host name its paths were expanded with) would be cloned into every host, and
# those hosts would never run their own entrypoint for that commit. So the
# timer is stopped before the configuration is written, stays enabled for the
# hosts' first boot, and the state directory is left empty.
#
# Checked with `sh -n` and `bash -n` (tests/integration/fleet.rs).
set -eu

: "${FLEET_REPO:?set FLEET_REPO (the fleet repository) in the template}"
branch=${FLEET_BRANCH:-main}
# The values become lines of the config file: one line each.
case "$FLEET_REPO$branch" in
*[[:space:]]*)
    echo "FLEET_REPO and FLEET_BRANCH must not contain white space" >&2
    exit 1
    ;;
esac

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q /tmp/gitops-run.deb
# The package started the timer; keep it enabled, but stopped in the image.
systemctl stop gitops-run.timer
systemctl enable gitops-run.timer

install -d -m 0700 /etc/gitops-run
install -m 0600 /tmp/gitops-run-deploy_key /etc/gitops-run/deploy_key
install -m 0644 /tmp/gitops-run-known_hosts /etc/gitops-run/known_hosts
umask 077
cat > /etc/gitops-run/config <<EOF
# /etc/gitops-run/config of a fleet host (docs/fleet.md)
GITOPS_REPO=${FLEET_REPO}
GITOPS_BRANCH=${branch}
GITOPS_PATH=hosts/%l,common
GITOPS_SSH_KEY=/etc/gitops-run/deploy_key
GITOPS_KNOWN_HOSTS=/etc/gitops-run/known_hosts
EOF
chmod 0600 /etc/gitops-run/config

rm -f /tmp/gitops-run.deb /tmp/gitops-run-deploy_key /tmp/gitops-run-known_hosts
# Nothing of a pass in the image (systemd creates the directory again).
rm -rf /var/lib/gitops-run
