#!/usr/bin/env bash
# Installs the dev environments' servers, pinned, and links each into /usr/local/bin (on the agent's
# PATH, where it looks for them):
#   code      code-server DSTACK_CODE_SERVER_VERSION (default 4.99.4, the newest line on Node 20) from npm,
#             into /opt/dstack/code-server, with install-code-server.sh (uploaded next to this script by
#             Packer; scripts/ in the repo): its build deps come from apt, and @vscode/ripgrep's binary
#             from Debian's ripgrep instead of GitHub
#   lab       JupyterLab DSTACK_JUPYTERLAB_VERSION (default 4.2.5) in the base Conda env (/opt/conda)
#   notebook  the Notebook DSTACK_NOTEBOOK_VERSION (default 7.2.2) in the base Conda env
# Offline (DSTACK_AMI_OFFLINE_DIR) all are skipped: they come from npm and conda-forge.
# DSTACK_CONDA_DIR, DSTACK_CODE_SERVER_DIR and DSTACK_BIN_DIR move the three places (for tests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

code_server_version="${DSTACK_CODE_SERVER_VERSION:-4.99.4}"
jupyterlab_version="${DSTACK_JUPYTERLAB_VERSION:-4.2.5}"
notebook_version="${DSTACK_NOTEBOOK_VERSION:-7.2.2}"
conda_dir="${DSTACK_CONDA_DIR:-/opt/conda}"
code_server_dir="${DSTACK_CODE_SERVER_DIR:-/opt/dstack/code-server}"
bin_dir="${DSTACK_BIN_DIR:-/usr/local/bin}"

if is_offline; then
  skip "code-server, JupyterLab and the Notebook" "offline: they come from npm and conda-forge; \`code\`, \`lab\` and \`notebook\` jobs will need them on PATH"
  exit 0
fi

# link NAME TARGET: NAME on the agent's PATH runs TARGET; TARGET must answer --version.
link() {
  "$2" --version >/dev/null 2>&1 || die "$1: $2 --version fails"
  install -d -m 0755 "$bin_dir"
  ln -sfn "$2" "$bin_dir/$1"
}

# code-server's native modules build with these; its ripgrep is Debian's.
apt_install build-essential pkg-config python3 libkrb5-dev libsecret-1-dev libx11-dev libxkbfile-dev ripgrep

installer="$here/install-code-server.sh"
[[ -f "$installer" ]] || installer="$here/../scripts/install-code-server.sh"
[[ -f "$installer" ]] || die "code-server: install-code-server.sh is neither next to $0 nor in ../scripts"
# npm is Node's own (install-node.sh); its root switches are set by the installer.
log "code-server: installing $code_server_version from npm into $code_server_dir"
code_server="$(PATH="/opt/dstack/node/bin:$PATH" CODE_SERVER_VERSION="$code_server_version" bash "$installer" "$code_server_dir")"
got="$("$code_server" --version | head -n 1)"
[[ "$got" == "$code_server_version "* ]] || die "code-server: $code_server --version says $got, expected $code_server_version"
link code-server "$code_server"
log "code-server: $bin_dir/code-server -> $code_server ($got)"

if [[ ! -x "$conda_dir/bin/conda" ]]; then
  skip "JupyterLab and the Notebook" "no conda in $conda_dir (install-conda.sh skipped it)"
  exit 0
fi
log "jupyter: installing jupyterlab $jupyterlab_version and notebook $notebook_version into the base env of $conda_dir"
"$conda_dir/bin/conda" install -y -q -n base -c conda-forge "jupyterlab=$jupyterlab_version" "notebook=$notebook_version" >/dev/null
for pair in "jupyter-lab:$jupyterlab_version" "jupyter-notebook:$notebook_version"; do
  name="${pair%%:*}"
  want="${pair#*:}"
  got="$("$conda_dir/bin/$name" --version 2>/dev/null | tail -n 1)" || die "jupyter: $conda_dir/bin/$name does not run"
  [[ "$got" == "$want" ]] || die "jupyter: $name --version says $got, expected $want"
  link "$name" "$conda_dir/bin/$name"
  log "jupyter: $bin_dir/$name -> $conda_dir/bin/$name ($got)"
done
"$conda_dir/bin/conda" clean -afy -q >/dev/null
