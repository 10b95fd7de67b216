# gitops-run in an image built by Packer (a Debian or Ubuntu guest): variables
# and provisioners to add to your template. See docs/fleet.md ("First boot").
#
# Packer is not installed where the tests run, so this file is not checked by
# a tool; the script it runs, packer-provision.sh (kept next to this file), is
# checked with `sh -n` and `bash -n` (tests/integration/fleet.rs).

variable "gitops_run_deb" {
  type        = string
  description = "Path of the gitops-run .deb on the machine running Packer (target/debian/gitops-run_*.deb)."
}

variable "fleet_repo" {
  type        = string
  description = "The fleet repository, e.g. ssh://git@git.example.com/ops/fleet.git."
}

variable "fleet_branch" {
  type    = string
  default = "main"
}

variable "deploy_key" {
  type        = string
  description = "Path of the read-only deploy key (private half) every host of the image will use."
}

variable "known_hosts" {
  type        = string
  description = "Path of a known_hosts file with the verified host key of the Git server."
}

build {
  # Your source(s), e.g. "source.qemu.debian12".
  sources = ["source.qemu.debian12"]

  # The uploads land in /tmp as the build user; the script moves them into
  # place as root with their modes and removes them.
  provisioner "file" {
    source      = var.gitops_run_deb
    destination = "/tmp/gitops-run.deb"
  }

  provisioner "file" {
    source      = var.deploy_key
    destination = "/tmp/gitops-run-deploy_key"
  }

  provisioner "file" {
    source      = var.known_hosts
    destination = "/tmp/gitops-run-known_hosts"
  }

  provisioner "shell" {
    script = "${path.root}/packer-provision.sh"
    environment_vars = [
      "FLEET_REPO=${var.fleet_repo}",
      "FLEET_BRANCH=${var.fleet_branch}",
    ]
    # As root; `env` passes the variables through sudo.
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
  }
}
