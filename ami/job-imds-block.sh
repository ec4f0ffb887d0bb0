#!/usr/bin/env bash
# Keeps dstack's jobs off the instance metadata service (IMDS), and so off the instance role's
# credentials: rejects every connection the job user opens to IMDS (169.254.169.254, and the IPv6
# endpoint fd00:ec2::254) with an iptables owner match, at the top of OUTPUT. The agent runs as
# root and keeps IMDS; it starts jobs as the job user (DSTACK_JOB_USER in dstack-agent.service).
# Run at boot by dstack-job-imds-block.service, before the agent; idempotent.
#   job-imds-block.sh [USER]     USER: a name or a uid (default dstack-job)
# test/e2e/imds-block.e2e.test.ts runs this script in a network namespace.
set -euo pipefail

user="${1:-dstack-job}"
for tool in iptables ip6tables; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "job-imds-block: $tool is missing (apt-get install iptables): jobs would reach the instance role" >&2
    exit 1
  }
done

# block TOOL ADDRESS REJECT-WITH: inserts the rule unless it is there.
block() {
  local rule=(OUTPUT -d "$2" -m owner --uid-owner "$user" -j REJECT --reject-with "$3")
  "$1" -w -C "${rule[@]}" 2>/dev/null || "$1" -w -I "${rule[@]}"
}
block iptables 169.254.169.254/32 icmp-port-unreachable
# A `provider: docker` job's container reaches IMDS through FORWARD, where no owner match applies.
# Docker sends forwarded traffic through DOCKER-USER first and keeps that chain's rules when it
# starts, so the chain is made here if docker has not made it yet. (The instances' IMDSv2 hop limit
# of 1 already keeps a container's token request from coming back; this is the second wall.)
iptables -w -N DOCKER-USER 2>/dev/null || true
docker_rule=(DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable)
iptables -w -C "${docker_rule[@]}" 2>/dev/null || iptables -w -I "${docker_rule[@]}"
# A kernel without IPv6 has no ip6tables tables, and no way to reach the IPv6 endpoint either.
if ip6tables -w -S OUTPUT >/dev/null 2>&1; then
  block ip6tables fd00:ec2::254/128 icmp6-port-unreachable
else
  echo "job-imds-block: no IPv6 in this kernel: only the IPv4 endpoint needs the rule"
fi
echo "job-imds-block: connections of user $user, and of containers, to IMDS are rejected"
