#!/usr/bin/env bash
# ExecStopPost of dstack-agent.service: scale to zero. The agent exits 0 when it has been idle for
# its idle timeout; then, and only then, this powers the EC2 instance off (the fleet's launch
# template sets shutdown behaviour "terminate", so a spot instance goes away). It does nothing when:
#   - DSTACK_SHUTDOWN_ON_IDLE is not 1 (set it to 0 in /etc/dstack/agent.env to keep the machine up);
#   - the agent failed or was killed (systemd restarts it: Restart=on-failure);
#   - the stop was asked for (systemctl stop, reboot, shutdown): systemd then has a job queued on
#     the unit, while an agent that exits on its own leaves the unit with none;
#   - the machine is not an EC2 instance (DMI vendor "Amazon EC2", or a Xen uuid starting "ec2").
# SERVICE_RESULT, EXIT_CODE and EXIT_STATUS are set by systemd for ExecStopPost (systemd >= 232).
# DSTACK_SYSFS (default /sys) lets a test point the EC2 check at a fake tree.
set -euo pipefail

unit=dstack-agent.service
sysfs="${DSTACK_SYSFS:-/sys}"

say() {
  printf 'idle-shutdown: %s\n' "$*"
}

if [[ "${DSTACK_SHUTDOWN_ON_IDLE:-0}" != 1 ]]; then
  say "DSTACK_SHUTDOWN_ON_IDLE is not 1; leaving the machine up"
  exit 0
fi
if [[ "${SERVICE_RESULT:-}" != success || "${EXIT_CODE:-}" != exited || "${EXIT_STATUS:-}" != 0 ]]; then
  say "the agent ended with ${SERVICE_RESULT:-?}/${EXIT_CODE:-?}/${EXIT_STATUS:-?}, not an idle exit; leaving the machine up"
  exit 0
fi

on_ec2() {
  local vendor uuid
  vendor="$(cat "$sysfs/devices/virtual/dmi/id/sys_vendor" 2>/dev/null || true)"
  uuid="$(cat "$sysfs/hypervisor/uuid" 2>/dev/null || true)"
  [[ "$vendor" == "Amazon EC2" || "${uuid,,}" == ec2* ]]
}
if ! on_ec2; then
  say "not an EC2 instance; leaving the machine up"
  exit 0
fi

# Job=<id> while a stop (or restart) job for the unit is running; empty (or 0) when there is none.
if ! job="$(systemctl show --property=Job --value "$unit")"; then
  say "cannot ask systemd whether a stop was requested; leaving the machine up"
  exit 0
fi
if [[ -n "$job" && "$job" != 0 ]]; then
  say "the agent was stopped on request (job $job); leaving the machine up"
  exit 0
fi

say "the agent exited after its idle timeout; powering off"
shutdown -h now "dstack agent idle"
