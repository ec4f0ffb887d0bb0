#!/usr/bin/env bash
# Installs Miniforge to /opt/conda (its `conda` linked into /usr/local/bin) with one env per Python version
# (/opt/conda/envs/py3.7 ... py3.11, where the agent looks for `python: 3.x`), and a pip cache
# shared by every job (/var/cache/dstack/pip, also set in /etc/pip.conf), warmed with a few wheels.
#   online:  Miniforge's latest release, checked against its .sha256; envs from conda-forge
#   offline: $DSTACK_AMI_OFFLINE_DIR/Miniforge3-Linux-<uname -m>.sh if present (base only: the envs
#            and the pip warm-up need conda-forge and PyPI, so they are skipped); else all skipped.
# DSTACK_PYTHON_VERSIONS (default "3.7 3.8 3.9 3.10 3.11"), DSTACK_PIP_PREWARM (default
# "pip setuptools wheel numpy": downloaded into the cache for every env).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

conda_dir=/opt/conda
pip_cache=/var/cache/dstack/pip
read -r -a versions <<<"${DSTACK_PYTHON_VERSIONS:-3.7 3.8 3.9 3.10 3.11}"
read -r -a prewarm <<<"${DSTACK_PIP_PREWARM:-pip setuptools wheel numpy}"

# The pip cache exists whatever else happens: jobs run as root and share it.
install -d -m 0755 "$pip_cache"
if [[ ! -e /etc/pip.conf ]] || ! grep -q "^cache-dir *= *$pip_cache" /etc/pip.conf; then
  printf '# Written by the dstack agent image: every pip on the machine shares one cache.\n[global]\ncache-dir = %s\n' "$pip_cache" >/etc/pip.conf
fi
log "pip: cache $pip_cache (/etc/pip.conf)"

installer_name="Miniforge3-Linux-$(uname -m).sh"
if [[ -x "$conda_dir/bin/conda" ]]; then
  log "conda: keeping $conda_dir"
elif is_offline; then
  if installer="$(offline_file "$installer_name")"; then
    log "conda: installing $installer"
    bash "$installer" -b -p "$conda_dir"
  else
    skip "Miniforge and the py3.x envs" "offline and no $DSTACK_AMI_OFFLINE_DIR/$installer_name; \`python: 3.x\` jobs will need python3.x on PATH"
    exit 0
  fi
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  url="https://github.com/conda-forge/miniforge/releases/latest/download/$installer_name"
  log "conda: downloading $url"
  fetch "$url" "$tmp/$installer_name"
  fetch "$url.sha256" "$tmp/$installer_name.sha256"
  sha256_check "$tmp/$installer_name" "$(cut -d' ' -f1 <"$tmp/$installer_name.sha256")"
  bash "$tmp/$installer_name" -b -p "$conda_dir"
fi
"$conda_dir/bin/conda" config --system --set auto_update_conda false
"$conda_dir/bin/conda" config --system --set notify_outdated_conda false

for v in "${versions[@]}"; do
  env_dir="$conda_dir/envs/py$v"
  if [[ ! -x "$env_dir/bin/python" ]]; then
    if is_offline; then
      skip "conda env py$v" "offline: creating it needs conda-forge"
      continue
    fi
    log "conda: creating py$v"
    "$conda_dir/bin/conda" create -y -q -n "py$v" "python=$v" pip setuptools wheel >/dev/null
  fi
  got="$("$env_dir/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [[ "$got" == "$v" ]] || die "conda: $env_dir/bin/python is Python $got, expected $v"
  if is_offline; then
    skip "pip warm-up for py$v" "offline: it downloads from PyPI"
  elif ((${#prewarm[@]} > 0)); then
    # `pip download` fills the cache with the wheels a job's `pip install` would fetch.
    scratch="$(mktemp -d)"
    PIP_CACHE_DIR="$pip_cache" "$env_dir/bin/python" -m pip download -q --disable-pip-version-check -d "$scratch" "${prewarm[@]}" ||
      log "pip: warming the cache for py$v failed; jobs will download instead"
    rm -rf "$scratch"
  fi
  log "conda: py$v is $("$env_dir/bin/python" --version 2>&1) at $env_dir/bin/python"
done
if ! is_offline; then
  "$conda_dir/bin/conda" clean -afy -q >/dev/null
fi
# `conda` for the agent and its jobs (condabin holds conda alone: no python shadows the system's):
# the agent makes `python: X.Y` with it when the image has no pyX.Y, and jobs run `conda env create`.
ln -sfn "$conda_dir/condabin/conda" /usr/local/bin/conda
log "conda: /usr/local/bin/conda -> $conda_dir/condabin/conda"
log "pip: cache holds $(du -sh "$pip_cache" | cut -f1)"
