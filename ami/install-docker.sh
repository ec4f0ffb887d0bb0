#!/usr/bin/env bash
# Docker and the NVIDIA container toolkit, for jobs that run in containers with GPUs. The Deep
# Learning Base AMI has both; this installs whichever is missing (`command -v docker`, `nvidia-ctk`):
#   docker:    Ubuntu's docker.io package
#   toolkit:   nvidia-container-toolkit from NVIDIA's apt repository (their documented steps)
#   offline:   Debian packages in $DSTACK_AMI_OFFLINE_DIR/docker/*.deb and
#              $DSTACK_AMI_OFFLINE_DIR/nvidia-container-toolkit/*.deb if present (installed with
#              their dependencies already on the machine), else skipped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

# install_local_debs NAME: offline, installs $DSTACK_AMI_OFFLINE_DIR/NAME/*.deb; false if there are none.
install_local_debs() {
  local debs=()
  local f
  for f in "$DSTACK_AMI_OFFLINE_DIR/$1"/*.deb; do
    [[ -e "$f" ]] && debs+=("$f")
  done
  ((${#debs[@]} > 0)) || return 1
  log "$1: installing ${#debs[@]} local package(s)"
  DEBIAN_FRONTEND=noninteractive dpkg -i "${debs[@]}"
}

if command -v docker >/dev/null 2>&1; then
  log "docker: present ($(docker --version 2>/dev/null || echo 'version unknown'))"
elif is_offline; then
  install_local_debs docker || skip "docker" "offline and no $DSTACK_AMI_OFFLINE_DIR/docker/*.deb; container jobs will not run"
else
  log "docker: installing docker.io"
  apt_install docker.io
fi
if command -v docker >/dev/null 2>&1 && have_systemd; then
  systemctl enable docker.service
fi

if command -v nvidia-ctk >/dev/null 2>&1; then
  log "nvidia container toolkit: present ($(nvidia-ctk --version 2>/dev/null | head -n1))"
elif is_offline; then
  install_local_debs nvidia-container-toolkit ||
    skip "nvidia container toolkit" "offline and no $DSTACK_AMI_OFFLINE_DIR/nvidia-container-toolkit/*.deb; containers will not see GPUs"
else
  log "nvidia container toolkit: installing from NVIDIA's apt repository"
  keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  command -v gpg >/dev/null 2>&1 || apt_install gpg
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  fetch https://nvidia.github.io/libnvidia-container/gpgkey "$tmp/gpgkey"
  gpg --batch --yes --dearmor -o "$keyring" "$tmp/gpgkey"
  fetch https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list "$tmp/list"
  sed "s#deb https://#deb [signed-by=$keyring] https://#g" "$tmp/list" >/etc/apt/sources.list.d/nvidia-container-toolkit.list
  APT_UPDATED=0
  apt_install nvidia-container-toolkit
fi

# Make `docker run --gpus` work; idempotent, so it is safe on the base image's own setup too.
if command -v docker >/dev/null 2>&1 && command -v nvidia-ctk >/dev/null 2>&1; then
  nvidia-ctk runtime configure --runtime=docker
  if have_systemd && systemctl is-active --quiet docker.service; then
    systemctl restart docker.service
  fi
  log "docker: nvidia runtime configured"
fi
