#!/usr/bin/env bash
# The unprivileged user dstack's jobs run as (dstack-job), and the firewall rule that keeps it off
# the instance metadata service (job-imds-block.sh, run at boot by dstack-job-imds-block.service).
# The agent runs as root and starts jobs as this user (DSTACK_JOB_USER in dstack-agent.service).
# Runs after install-agent.sh and install-conda.sh: the job user gets the shared pip cache and the
# conda envs, so that a job's `pip install` works as it did when jobs ran as root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

user=dstack-job
unit=dstack-job-imds-block.service

if id -u "$user" >/dev/null 2>&1; then
  log "job user: $user exists"
else
  useradd --system --user-group --create-home --home-dir "/var/lib/$user" --shell /bin/bash "$user"
  log "job user: created $user (uid $(id -u "$user"))"
fi
# The job's folder is under the agent's DSTACK_HOME: the job user may pass through, not list it.
install -d -m 0711 /var/lib/dstack
for dir in /var/cache/dstack/pip /opt/conda/envs; do
  if [[ -d "$dir" ]]; then
    chown -R "$user:$user" "$dir"
    log "job user: owns $dir"
  fi
done

if ! command -v iptables >/dev/null 2>&1; then
  if is_offline; then
    skip "iptables" "offline; the agent will not start without the IMDS rule (install iptables)"
  else
    apt_install iptables
  fi
fi
install -m 0755 "$here/job-imds-block.sh" /opt/dstack/agent/job-imds-block.sh
install_unit "$here" "$unit"
log "job user: $unit enabled; jobs cannot reach IMDS (aws.jobInstanceRole: true lets them)"
