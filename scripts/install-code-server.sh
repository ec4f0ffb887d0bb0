#!/usr/bin/env bash
# Installs code-server 4.99.x (the newest line that runs on Node 20) from npm into PREFIX, with no
# access to GitHub: @vscode/ripgrep's postinstall takes its binary from a cache tarball made of
# Debian's /usr/bin/rg instead of downloading one. Needs (Debian) build-essential pkg-config python3
# libkrb5-dev libsecret-1-dev libx11-dev libxkbfile-dev ripgrep. Prints the code-server path.
set -euo pipefail
prefix=${1:?usage: install-code-server.sh PREFIX}
version=${CODE_SERVER_VERSION:-4.99.4}
bin="$prefix/node_modules/.bin/code-server"
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then echo "$bin"; exit 0; fi
rg=$(command -v rg) || { echo "install-code-server: ripgrep (rg) is needed: apt-get install ripgrep" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/vscode-ripgrep-cache-1.15.11" "$tmp/rg"
cp "$rg" "$tmp/rg/rg"
tar -C "$tmp/rg" -czf "$tmp/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" rg
mkdir -p "$prefix"
[ -f "$prefix/package.json" ] || echo '{"private":true}' > "$prefix/package.json"
TMPDIR="$tmp" npm_config_unsafe_perm=true npm_config_yes=true \
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "code-server@$version" >&2
"$bin" --version >/dev/null
echo "$bin"
