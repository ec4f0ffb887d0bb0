#!/usr/bin/env bash
# Installs the agent bundle to /opt/dstack/agent and the dstack-agent systemd unit, enabled at boot.
# The bundle is always local: DSTACK_AGENT_BUNDLE_DIR (default: agent-bundle/ next to this script),
# made by `npm run build:agent`. The agent runs as root (it starts Docker containers; see README).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

bundle="${DSTACK_AGENT_BUNDLE_DIR:-$here/agent-bundle}"
dest=/opt/dstack/agent
unit=dstack-agent.service

for f in dstack-agent.mjs VERSION package.json; do
  [[ -f "$bundle/$f" ]] || die "agent: $bundle/$f is missing; run \`npm run build:agent\` before building the image"
done
version="$(tr -d '[:space:]' <"$bundle/VERSION")"
if [[ -n "${DSTACK_AGENT_VERSION:-}" && "$DSTACK_AGENT_VERSION" != "$version" ]]; then
  die "agent: the bundle is version $version but the image is being named for $DSTACK_AGENT_VERSION"
fi

install -d -m 0755 "$dest"
install -m 0644 "$bundle/dstack-agent.mjs" "$bundle/VERSION" "$bundle/package.json" "$dest/"
install -m 0755 "$here/idle-shutdown.sh" "$dest/idle-shutdown.sh"
/usr/bin/node --check "$dest/dstack-agent.mjs" || die "agent: $dest/dstack-agent.mjs does not parse with $(/usr/bin/node --version)"
log "agent: $dest/dstack-agent.mjs version $version"

# DSTACK_HOME of the unit: the agent's registry, job directories and logs.
# 0711: the job user (install-job-user.sh) reaches its job's folder under it.
install -d -m 0711 /var/lib/dstack
install -d -m 0755 /etc/dstack
if [[ -e /etc/dstack/agent.env ]]; then
  log "agent: keeping the existing /etc/dstack/agent.env"
else
  install -m 0644 "$here/agent.env" /etc/dstack/agent.env
fi

install_unit "$here" "$unit"
if have_systemd; then
  systemctl daemon-reload
fi
log "agent: $unit enabled; it starts at boot and reads its config from EC2 user-data"
