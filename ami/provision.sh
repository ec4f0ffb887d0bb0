#!/usr/bin/env bash
# Provisions the dstack agent's machine image. Packer uploads ami/ to /tmp/dstack-ami and the agent
# bundle (npm run build:agent) to /tmp/dstack-ami/agent-bundle, then runs this as root:
#   sudo DSTACK_AGENT_VERSION=0.1.0 bash /tmp/dstack-ami/provision.sh
# test/slow/ami-provision.test.ts runs the same script in a Debian chroot with the offline switch.
#
# Environment:
#   DSTACK_AMI_OFFLINE_DIR  the offline switch: download nothing, take inputs from this dir (README)
#   DSTACK_AGENT_VERSION    when set, the bundle's VERSION must equal it (the image is named after it)
#   DSTACK_AGENT_BUNDLE_DIR the bundle (default: agent-bundle/ next to this script)
#   DSTACK_NODE_VERSION, DSTACK_PYTHON_VERSIONS, DSTACK_PIP_PREWARM, DSTACK_CODE_SERVER_VERSION,
#   DSTACK_JUPYTERLAB_VERSION, DSTACK_NOTEBOOK_VERSION: see the step scripts
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

[[ "$(id -u)" == 0 ]] || die "run as root (sudo bash $0)"
started=$SECONDS
if is_offline; then
  log "offline: downloading nothing; inputs from $DSTACK_AMI_OFFLINE_DIR"
fi

# Packer connects as soon as sshd is up; cloud-init may still be installing packages then.
if command -v cloud-init >/dev/null 2>&1 && have_systemd; then
  log "waiting for cloud-init to finish"
  cloud-init status --wait >/dev/null || log "cloud-init reported an error; going on"
fi

# What the agent itself runs: bash for job scripts, git to apply a run's uncommitted changes,
# curl for the provisioning downloads.
missing=()
for cmd in bash git curl; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]} > 0)); then
  if is_offline; then
    skip "apt packages (${missing[*]})" "offline; runs with uncommitted changes need git on the machine"
  else
    log "installing ${missing[*]}"
    apt_install "${missing[@]}" ca-certificates
  fi
fi

for step in install-node.sh install-agent.sh install-conda.sh install-dev-servers.sh install-docker.sh install-job-user.sh; do
  log "== $step"
  bash "$here/$step"
done

log "done in $((SECONDS - started)) s: agent $(cat /opt/dstack/agent/VERSION) with $(/usr/bin/node --version)"
