#!/usr/bin/env bash
# A private Docker daemon and registry for the tests (.ci/run, test/support/docker.ts), beside any other
# dockerd on the machine: its own data root, exec root (containerd's state), socket, pidfile, bridge and
# cgroup parent. No public registry is reachable here, so the test image is made with `docker import`
# from busybox-static and pushed to Debian's docker-registry on 127.0.0.1: pulls and digests are real.
#
#   ci-docker.sh start DIR   start both, push the images, write DIR/env and print it (KEY=VALUE lines):
#                            DOCKER_HOST, DSTACK_TEST_DOCKER_HOST, DSTACK_TEST_REGISTRY (127.0.0.1:PORT),
#                            DSTACK_TEST_DOCKER_IMAGE (REGISTRY/busybox:latest, pushed) and, when
#                            test:slow's debootstrap root is cached, DSTACK_TEST_DOCKER_DEBIAN_IMAGE.
#   ci-docker.sh stop DIR    stop the registry and dockerd (SIGTERM, wait, SIGKILL), kill what is left in
#                            the daemon's cgroup, unmount and remove DIR and the bridge. Idempotent.
#
# DIR must be short (the socket path limit is 108 bytes): /tmp/dsd-XXXX, say. Needs root.
# DSTACK_CI_DOCKER_OWNER=PID: stop by itself once that process is gone (a test run killed with -9).
# DSTACK_CI_CACHE (default /var/cache/dstack-ci): the busybox root is kept there as a tar, one per day.
# DSTACK_CI_DOCKER_DEBIAN=0: do not import the cached debootstrap root (a few seconds).
set -euo pipefail

usage() { echo "usage: ci-docker.sh start|stop DIR" >&2; exit 2; }
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then usage; fi
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac
dir=${dir%/}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root=${DSTACK_CI_CACHE:-/var/cache/dstack-ci}
debootstrap_cache=/var/tmp/dstack-debootstrap-cache
log() { echo "ci-docker: $*" >&2; }
die() { log "$*"; exit 1; }

# Names derived from DIR, so that stop finds them from DIR alone: bridge (15 bytes max) and cgroup parent.
tag="$(printf '%s' "$dir" | sha256sum | cut -c1-8)"
bridge="dsd$tag"
cgroup_parent="dstack-ci-$tag"

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Sends SIGTERM, waits up to $2 s, then SIGKILL; returns once the process is gone.
end_process() {
  local pid=$1 grace=$2 i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  log "pid $pid survived SIGKILL"
}

# Pids whose command line names DIR (containerd, its shims), except this script and its callers.
pids_naming_dir() {
  local p args
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    args="$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")" || continue
    case "$args" in *ci-docker.sh*) continue ;; *"$dir/"*) echo "$p" ;; esac
  done
}

# Pids in the daemon's cgroup parent (the containers' processes), cgroup v1 or v2.
cgroup_pids() {
  local f
  for f in /sys/fs/cgroup/*/"$cgroup_parent"/*/cgroup.procs /sys/fs/cgroup/"$cgroup_parent"/*/cgroup.procs; do
    [ -r "$f" ] && cat "$f"
  done
  return 0
}

stop() {
  # The owner watcher first, so that it does not run a second stop beside this one.
  if [ -f "$dir/watch.pid" ] && [ "$(cat "$dir/watch.pid")" != "${DSTACK_CI_DOCKER_SELF:-}" ]; then
    end_process "$(cat "$dir/watch.pid")" 1
  fi
  [ -f "$dir/registry.pid" ] && end_process "$(cat "$dir/registry.pid")" 5
  if [ -f "$dir/docker.pid" ]; then
    local dpid
    dpid="$(cat "$dir/docker.pid")"
    if pid_alive "$dpid" && [ -S "$dir/docker.sock" ]; then
      # Containers first, through the daemon: quicker than its shutdown, which waits on each one.
      local ids
      ids="$(DOCKER_HOST="unix://$dir/docker.sock" timeout 20 docker ps -aq 2>/dev/null || true)"
      # shellcheck disable=SC2086 # one id a word
      [ -z "$ids" ] || DOCKER_HOST="unix://$dir/docker.sock" timeout 30 docker rm -f $ids >/dev/null 2>&1 || true
    fi
    end_process "$dpid" 20
  fi
  local p
  for p in $(pids_naming_dir) $(cgroup_pids); do kill -KILL "$p" 2>/dev/null || true; done
  for p in $(pids_naming_dir) $(cgroup_pids); do end_process "$p" 1; done
  # Mounts the daemon left (overlays, shm, network namespaces), deepest first.
  if [ -d "$dir" ]; then
    local real m
    real="$(realpath "$dir")"
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
    done < <(awk -v d="$real" '$5 == d || index($5, d "/") == 1 { print length($5) " " $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
  fi
  local c
  for c in /sys/fs/cgroup/*/"$cgroup_parent" /sys/fs/cgroup/"$cgroup_parent"; do
    [ -d "$c" ] || continue
    find "$c" -depth -mindepth 1 -type d -exec rmdir {} \; 2>/dev/null || true
    rmdir "$c" 2>/dev/null || true
  done
  if ip link show "$bridge" >/dev/null 2>&1; then ip link delete "$bridge" || log "cannot delete bridge $bridge"; fi
  if [ -d "$dir" ]; then rm -rf --one-file-system "$dir"; fi
  [ -z "$(pids_naming_dir)" ] || die "processes still name $dir: $(pids_naming_dir | tr '\n' ' ')"
}

# A free 10.213.N.0/24 for the bridge, chosen under a lock so that two starts do not take the same one.
make_bridge() {
  local n addrs
  exec 9>/run/dstack-ci-docker.lock
  flock 9
  addrs="$(ip -4 -o addr show)"
  for ((n = 0; n < 256; n++)); do
    case "$addrs" in *" 10.213.$n."*) continue ;; esac
    ip link add "$bridge" type bridge
    ip addr add "10.213.$n.1/24" dev "$bridge"
    ip link set "$bridge" up
    exec 9>&-
    return 0
  done
  die "no free 10.213.N.0/24 for the bridge"
}

# busybox-static with every applet linked, as a tar, cached per day.
busybox_tar() {
  local day out tmp
  day="$(date +%F)"
  if mkdir -p "$cache_root/$day" 2>/dev/null && [ -w "$cache_root/$day" ]; then out="$cache_root/$day/busybox-root.tar"; else out="$dir/busybox-root.tar"; fi
  if [ ! -s "$out" ]; then
    # Built beside its final place and renamed into it whole: a concurrent start never reads half a tar.
    tmp="$(mktemp -d "$(dirname "$out")/bbroot.XXXX")"
    mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc"
    chmod 1777 "$tmp/root/tmp"
    cp "$(command -v busybox)" "$tmp/root/bin/busybox"
    local a
    for a in $("$tmp/root/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/root/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tmp/root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/root/etc/group"
    tar -C "$tmp/root" --numeric-owner -cf "$tmp/root.tar" .
    mv "$tmp/root.tar" "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

# A start that fails leaves nothing behind.
on_start_exit() {
  if [ "$1" != 0 ]; then log "start failed; stopping what it started"; stop || true; fi
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (dockerd)"
  command -v dockerd >/dev/null || die "dockerd is not installed (apt-get install docker.io)"
  command -v docker-registry >/dev/null || die "docker-registry is not installed (apt-get install docker-registry)"
  command -v busybox >/dev/null || die "busybox is not installed (apt-get install busybox-static)"
  [ ${#dir} -le 60 ] || die "DIR is too long for dockerd's sockets (${#dir} > 60 bytes): use /tmp/dsd-XXXX"
  if [ -f "$dir/docker.pid" ] && pid_alive "$(cat "$dir/docker.pid")"; then die "a dockerd already runs in $dir"; fi
  mkdir -p "$dir"
  trap 'on_start_exit $?' EXIT
  ip link show "$bridge" >/dev/null 2>&1 || make_bridge
  echo '{}' >"$dir/daemon.json"
  # --iptables=false: this daemon leaves the host's firewall to any other dockerd; published ports still
  # work through docker-proxy, and no test container needs to reach out. cgroupfs: on a systemd host
  # dockerd would take the systemd driver, which refuses a cgroup parent that is not a .slice. Its own
  # containerd namespaces: a machine whose docker.io started the system containerd shares nothing with it.
  setsid dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
    -H "unix://$dir/docker.sock" --pidfile "$dir/docker.pid" --bridge "$bridge" --iptables=false --ip-masq=false \
    --cgroup-parent "$cgroup_parent" --exec-opt native.cgroupdriver=cgroupfs \
    --containerd-namespace "dsd$tag" --containerd-plugins-namespace "dsd$tag-plugins" </dev/null >"$dir/dockerd.log" 2>&1 &
  export DOCKER_HOST="unix://$dir/docker.sock"
  local i
  for ((i = 0; ; i++)); do
    if docker version >/dev/null 2>&1; then break; fi
    if ! pid_alive $!; then die "dockerd exited at start; the end of its log:
$(tail -n 20 "$dir/dockerd.log")"; fi
    if [ "$i" -ge 600 ]; then die "dockerd did not answer on $DOCKER_HOST in 60 s; the end of its log:
$(tail -n 20 "$dir/dockerd.log")"; fi
    sleep 0.1
  done

  # The registry, on the first port that it can bind.
  local port="" try
  mkdir -p "$dir/registry"
  for ((try = 0; try < 20; try++)); do
    port=$((20000 + RANDOM % 20000))
    if ss -Hltn "sport = :$port" | grep -q .; then continue; fi
    printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$dir/registry" "$port" >"$dir/registry.yml"
    setsid docker-registry serve "$dir/registry.yml" </dev/null >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    for ((i = 0; i < 100; i++)); do
      if curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; then break 2; fi
      pid_alive "$(cat "$dir/registry.pid")" || break
      sleep 0.1
    done
    end_process "$(cat "$dir/registry.pid")" 2
    port=""
  done
  [ -n "$port" ] || die "docker-registry did not start; the end of its log:
$(tail -n 20 "$dir/registry.log")"
  local registry="127.0.0.1:$port"

  # The test images, pushed so that pulls go through the registry.
  local image="$registry/busybox:latest"
  docker import -c 'ENV PATH=/bin' "$(busybox_tar)" "$image" >/dev/null
  docker push -q "$image" >/dev/null || docker push "$image" >&2
  local debian=""
  local root
  root="$(find "$debootstrap_cache" -maxdepth 1 -name 'bookworm-minbase-*.tar' 2>/dev/null | sort | tail -n 1 || true)"
  if [ -n "$root" ] && [ "${DSTACK_CI_DOCKER_DEBIAN:-1}" != 0 ]; then
    debian="$registry/debian:bookworm-minbase"
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$root" "$debian" >/dev/null
    docker push -q "$debian" >/dev/null || docker push "$debian" >&2
  fi

  {
    echo "DOCKER_HOST=$DOCKER_HOST"
    echo "DSTACK_TEST_DOCKER_HOST=$DOCKER_HOST"
    echo "DSTACK_TEST_REGISTRY=$registry"
    echo "DSTACK_TEST_DOCKER_IMAGE=$image"
    if [ -n "$debian" ]; then echo "DSTACK_TEST_DOCKER_DEBIAN_IMAGE=$debian"; fi
  } >"$dir/env"

  if [ -n "${DSTACK_CI_DOCKER_OWNER:-}" ]; then
    # Stops everything once the owner is gone, however it ended.
    local owner=$DSTACK_CI_DOCKER_OWNER
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; DSTACK_CI_DOCKER_SELF=$$ exec bash "$2" stop "$3"' \
      ci-docker-watch "$owner" "$here/ci-docker.sh" "$dir" </dev/null >>"$dir/watch.log" 2>&1 &
    echo $! >"$dir/watch.pid"
  fi
  trap - EXIT
  cat "$dir/env"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
