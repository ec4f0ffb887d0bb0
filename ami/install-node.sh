#!/usr/bin/env bash
# Installs Node 20 as /usr/bin/node (the path in dstack-agent.service's ExecStart).
#   online:  the official .tar.gz of DSTACK_NODE_VERSION, checked against its SHASUMS256.txt
#   offline: $DSTACK_AMI_OFFLINE_DIR/node/bin/node (a node binary) or
#            $DSTACK_AMI_OFFLINE_DIR/node/node-v*-linux-*.tar.gz|.tar.xz (an official tarball)
# A /usr/bin/node that is already Node 20 is kept. Node goes to /opt/dstack/node.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

NODE_VERSION="${DSTACK_NODE_VERSION:-20.19.5}"
NODE_MAJOR="${NODE_VERSION%%.*}"
prefix=/opt/dstack/node

node_major() {
  local v
  v="$("$1" --version 2>/dev/null)" || return 1
  v="${v#v}"
  printf '%s\n' "${v%%.*}"
}

if [[ -x /usr/bin/node && "$(node_major /usr/bin/node || true)" == "$NODE_MAJOR" ]]; then
  log "node: keeping /usr/bin/node $(/usr/bin/node --version)"
  exit 0
fi

# unpack TARBALL: the official layout (node-vX-linux-ARCH/bin/node ...) into $prefix.
unpack() {
  if [[ "$1" == *.xz ]] && ! command -v xz >/dev/null 2>&1; then
    die "node: $1 needs xz, which this machine lacks; use the .tar.gz"
  fi
  rm -rf "$prefix"
  mkdir -p "$prefix"
  tar -xf "$1" -C "$prefix" --strip-components=1 --no-same-owner || die "node: cannot unpack $1"
}

if is_offline; then
  if binary="$(offline_file node/bin/node)"; then
    log "node: installing the binary $binary"
    rm -rf "$prefix"
    install -D -m 0755 "$binary" "$prefix/bin/node"
  elif tarball="$(offline_file 'node/node-v*-linux-*.tar.gz' 'node/node-v*-linux-*.tar.xz')"; then
    log "node: unpacking $tarball"
    unpack "$tarball"
  else
    die "node: offline, and neither $DSTACK_AMI_OFFLINE_DIR/node/bin/node nor a node-v*-linux-*.tar.gz there; the agent needs Node $NODE_MAJOR"
  fi
else
  name="node-v${NODE_VERSION}-linux-$(machine_arch).tar.gz"
  base="https://nodejs.org/dist/v${NODE_VERSION}"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "node: downloading $base/$name"
  fetch "$base/$name" "$tmp/$name"
  fetch "$base/SHASUMS256.txt" "$tmp/SHASUMS256.txt"
  sum="$(awk -v n="$name" '$2 == n { print $1 }' "$tmp/SHASUMS256.txt")"
  [[ -n "$sum" ]] || die "node: $name is not in SHASUMS256.txt"
  sha256_check "$tmp/$name" "$sum"
  unpack "$tmp/$name"
fi

# Ubuntu's own nodejs package may own /usr/bin/node: divert it rather than overwrite a packaged file.
if [[ -e /usr/bin/node && ! -L /usr/bin/node ]] && command -v dpkg >/dev/null && dpkg -S /usr/bin/node >/dev/null 2>&1; then
  log "node: diverting the packaged /usr/bin/node to /usr/bin/node.distrib"
  dpkg-divert --local --rename --add /usr/bin/node
fi
ln -sfn "$prefix/bin/node" /usr/bin/node
got="$(node_major /usr/bin/node)" || die "node: /usr/bin/node does not run on this machine"
[[ "$got" == "$NODE_MAJOR" ]] || die "node: /usr/bin/node is Node $got, expected $NODE_MAJOR"
log "node: /usr/bin/node -> $prefix/bin/node $(/usr/bin/node --version)"
