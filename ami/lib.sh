# shellcheck shell=bash
# Sourced by the provisioning scripts in ami/: logging, the offline switch, downloads and apt.
#
# The offline switch: DSTACK_AMI_OFFLINE_DIR=/path. When it is set, nothing is downloaded. Each
# step looks for its input in that directory (layout in ami/README.md) and, when the input is not
# there, either skips with a "SKIPPED" line (Miniforge, Python envs, pip cache warm-up, Docker,
# NVIDIA container toolkit, apt packages) or fails (Node: the agent cannot run without it).

DSTACK_AMI_OFFLINE_DIR="${DSTACK_AMI_OFFLINE_DIR:-}"
if [[ -n "$DSTACK_AMI_OFFLINE_DIR" && ! -d "$DSTACK_AMI_OFFLINE_DIR" ]]; then
  printf '[dstack-ami] ERROR: DSTACK_AMI_OFFLINE_DIR=%s is not a directory\n' "$DSTACK_AMI_OFFLINE_DIR" >&2
  exit 1
fi

log() {
  printf '[dstack-ami] %s\n' "$*"
}

die() {
  printf '[dstack-ami] ERROR: %s\n' "$*" >&2
  exit 1
}

# skip WHAT WHY: one line that says what the image will not have, and why.
skip() {
  printf '[dstack-ami] SKIPPED %s: %s\n' "$1" "$2"
}

# install_unit DIR UNIT: installs DIR/UNIT into /etc/systemd/system and enables it. Works in a
# chroot and during the Packer build alike (enabling only makes the symlink); with no systemctl (a
# bare chroot) it makes the link `systemctl enable` would make.
install_unit() {
  install -d -m 0755 /etc/systemd/system
  install -m 0644 "$1/$2" "/etc/systemd/system/$2"
  if command -v systemctl >/dev/null 2>&1; then
    systemctl enable "$2"
  else
    install -d -m 0755 /etc/systemd/system/multi-user.target.wants
    ln -sfn "/etc/systemd/system/$2" "/etc/systemd/system/multi-user.target.wants/$2"
    log "no systemctl here; linked $2 into multi-user.target.wants by hand"
  fi
}

is_offline() {
  [[ -n "$DSTACK_AMI_OFFLINE_DIR" ]]
}

# offline_file NAME...: prints the first NAME (a path or glob under the offline dir) that exists.
offline_file() {
  local pattern match
  for pattern in "$@"; do
    for match in "$DSTACK_AMI_OFFLINE_DIR"/$pattern; do
      if [[ -e "$match" ]]; then
        printf '%s\n' "$match"
        return 0
      fi
    done
  done
  return 1
}

# fetch URL FILE: downloads with retries; never called offline.
fetch() {
  is_offline && die "fetch $1 while DSTACK_AMI_OFFLINE_DIR is set (a provisioning step forgot the offline switch)"
  curl -fsSL --retry 5 --retry-delay 3 --connect-timeout 20 -o "$2" "$1" ||
    die "cannot download $1 (no internet? DSTACK_AMI_OFFLINE_DIR builds without it: ami/README.md)"
}

# sha256_check FILE HEX: fails unless FILE has that sha256.
sha256_check() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [[ "$got" == "$2" ]] || die "$1: sha256 $got, expected $2"
}

APT_UPDATED=0
# apt_install PACKAGE...: online only; waits for the boot-time apt runs (unattended-upgrades) to finish.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [[ "$APT_UPDATED" == 0 ]]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    APT_UPDATED=1
  fi
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
}

# have_systemd: true on a booted systemd machine (the Packer build), false in a chroot.
have_systemd() {
  [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1
}

# machine_arch: x64 or arm64 (Node's names), from uname.
machine_arch() {
  case "$(uname -m)" in
    x86_64) echo x64 ;;
    aarch64) echo arm64 ;;
    *) die "unsupported machine $(uname -m)" ;;
  esac
}
