#!/usr/bin/env bash
# Pulls the images suggested for `provider: docker` (ami/images.txt: name, CUDA, Python), so that a
# docker job on a fresh instance that uses one starts without a pull. Packer runs it as a
# provisioner of its own after provision.sh: the longest step, and the only one that needs Docker
# Hub. Docker is running by then (the base image's, or the one install-docker.sh enabled).
#   online:  `docker pull` of each image, three tries each; a pull that still fails fails the build
#   offline: `docker load` of $DSTACK_AMI_OFFLINE_DIR/images/*.tar (from `docker save`) if there
#            are any and dockerd answers; else skipped (docker jobs then pull their image at start)
# DSTACK_PREPULL_IMAGES: a space-separated list of images to pull instead of images.txt ("": none).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ami/lib.sh
source "$here/lib.sh"

images=()
if [[ -v DSTACK_PREPULL_IMAGES ]]; then
  read -r -a images <<<"$DSTACK_PREPULL_IMAGES"
else
  while read -r name _; do
    [[ -z "$name" || "$name" == \#* ]] || images+=("$name")
  done <"$here/images.txt"
fi
if ((${#images[@]} == 0)); then
  log "docker images: none to pull"
  exit 0
fi

if ! command -v docker >/dev/null 2>&1; then
  is_offline || die "docker images: no docker on the machine (install-docker.sh should have installed it)"
  skip "the docker images (${images[*]})" "no docker on the machine"
  exit 0
fi
if ! docker info >/dev/null 2>&1 && have_systemd; then
  systemctl start docker.service
fi
if ! docker info >/dev/null 2>&1; then
  is_offline || die "docker images: dockerd does not answer (systemctl status docker)"
  skip "the docker images (${images[*]})" "offline and dockerd does not answer"
  exit 0
fi

if is_offline; then
  loaded=0
  for f in "$DSTACK_AMI_OFFLINE_DIR"/images/*.tar; do
    [[ -e "$f" ]] || continue
    log "docker images: loading $f"
    docker load -q -i "$f"
    loaded=$((loaded + 1))
  done
  ((loaded > 0)) || skip "the docker images (${images[*]})" "offline: pulling needs the registries, and there is no $DSTACK_AMI_OFFLINE_DIR/images/*.tar"
  exit 0
fi

for image in "${images[@]}"; do
  log "docker images: pulling $image"
  tries=0
  until docker pull -q "$image" >/dev/null; do
    tries=$((tries + 1))
    ((tries < 3)) || die "docker images: cannot pull $image (a tag that is gone? change ami/images.txt)"
    sleep $((tries * 10))
  done
  log "docker images: $image is $(docker image inspect --format '{{index .RepoDigests 0}}' "$image")"
done
log "docker images: ${#images[@]} pulled"
