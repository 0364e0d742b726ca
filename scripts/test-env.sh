#!/usr/bin/env bash
# Provisions what the test suite needs on this machine, and tears it down again.
#
#   bash scripts/test-env.sh up      install (apt-get) and start everything; skips what is
#                                    already present and running; writes .test-env/env.json
#   bash scripts/test-env.sh down    stop what `up` started (containers, dockerd, podman service),
#                                    once no other process that ran `up` is still alive
#   bash scripts/test-env.sh down --force   stop it whoever else uses it
#   bash scripts/test-env.sh status  show what is running
#   bash scripts/test-env.sh purge   `down`, then delete .test-env/ (engine data, test image)
#
# What `up` provides (Debian 12, root; only Debian's packages are needed, no image registry):
#   - dockerd (Debian's docker.io) on a private socket, with no host network changes
#   - podman's Docker-compatible service (podman, runc, conmon) on its own socket
#   - a local test image, localhost/flotilla-sandbox:latest (bash, coreutils, python3, and node
#     when the host has /usr/bin/node), built from the host's installed packages and imported
#     into both engines
#   - a registries.conf for podman that allows plain HTTP to 127.0.0.1:47600-47607, where the
#     pull tests serve an image (dockerd allows 127.0.0.0/8 by itself)
#   - Debian's chromium and redis-server (installed only); curl and jq for the server examples
#   - a throwaway PostgreSQL cluster (Debian's postgresql, initdb'd in a temporary directory as
#     the postgres user) on 127.0.0.1 and a free port, with a role and database `flotilla`
#     (password `flotilla`, not a superuser); `down` stops it and deletes the cluster
# .test-env/env.json is a flat JSON object of environment variables that scripts/test.mjs
# merges into the test run. Logs go to .test-env/*.log.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.test-env"
IMAGE="localhost/flotilla-sandbox:latest"
# Bump when the image recipe changes: a different recipe rebuilds the image.
IMAGE_RECIPE=3

# Sockets and runtime dirs: unix socket paths are limited to 108 bytes, so a deep checkout
# keeps them under /run instead.
if ((${#STATE} <= 60)); then
  RUN="$STATE/run"
else
  RUN="/run/flotilla-test-env-$(printf %s "$ROOT" | md5sum | cut -c1-10)"
fi
DOCKER_SOCK="$RUN/docker.sock"
PODMAN_SOCK="$RUN/podman.sock"
DOCKERD_PID="$STATE/dockerd.pid"
PODMAN_PID="$STATE/podman.pid"
CONTAINERS_CONF_FILE="$STATE/containers.conf"
REGISTRIES_CONF_FILE="$STATE/registries.conf"
# Plain-HTTP test registries on 127.0.0.1 (the workers' pull tests serve an image there).
# dockerd trusts 127.0.0.0/8 without TLS; podman only the locations listed in registries.conf,
# so the tests listen on one of these fixed ports (several, for concurrent test runs).
REGISTRY_PORT_FIRST=47600
REGISTRY_PORT_COUNT=8
DOCKER_CLI=/usr/bin/docker
# The PostgreSQL cluster lives outside the checkout (the postgres user must own it and reach it).
PG_DIR="/tmp/flotilla-test-pg-$(printf %s "$ROOT" | md5sum | cut -c1-10)"
PG_USER=postgres

STEP="start"
log() { printf '[test-env %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "FAILED at step '$STEP': $*"
  exit 1
}
trap 'rc=$?; ((BASH_SUBSHELL > 0)) || log "FAILED at step '"'"'$STEP'"'"' (exit $rc, line $LINENO); logs in $STATE/"; exit $rc' ERR

podman_cmd() {
  CONTAINERS_CONF="$CONTAINERS_CONF_FILE" CONTAINERS_REGISTRIES_CONF="$REGISTRIES_CONF_FILE" podman --root "$STATE/podman-root" \
    --runroot "$RUN/podman-runroot" --storage-driver overlay "$@"
}

ping_sock() { curl -fsS --max-time 2 --unix-socket "$1" http://localhost/_ping >/dev/null 2>&1; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_ping() { # sock pidfile logfile what
  local i
  for ((i = 0; i < 300; i++)); do
    ping_sock "$1" && return 0
    if ! pid_alive "$2"; then
      tail -n 30 "$3" >&2 || true
      die "$4 exited during startup (log: $3)"
    fi
    sleep 0.1
  done
  tail -n 30 "$3" >&2 || true
  die "$4 did not answer on $1 within 30 s (log: $3)"
}

stop_pid() { # pidfile what
  local pid i
  [[ -f $1 ]] || return 0
  pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$2 (pid $pid) did not stop in 20 s; killing it"
      kill -9 "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    log "stopped $2 (pid $pid)"
  fi
  rm -f "$1"
}

# --- up ------------------------------------------------------------------------------------

install_packages() {
  STEP="install packages"
  local want=(docker.io podman runc conmon python3 chromium redis-server postgresql curl jq tar) missing=() p
  for p in "${want[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != ii* ]]; then missing+=("$p"); fi
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $EUID -eq 0 ]] || die "installing ${missing[*]} needs root (run as root, or install them first)"
  log "installing ${missing[*]} (log: $STATE/apt.log)"
  {
    apt-get update -q -o DPkg::Lock::Timeout=300 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}"
  } >>"$STATE/apt.log" 2>&1 || {
    tail -n 20 "$STATE/apt.log" >&2
    die "apt-get install ${missing[*]} failed (log: $STATE/apt.log)"
  }
}

start_dockerd() {
  STEP="start dockerd"
  if pid_alive "$DOCKERD_PID" && ping_sock "$DOCKER_SOCK"; then return 0; fi
  stop_pid "$DOCKERD_PID" dockerd
  mkdir -p "$STATE/docker-data" "$RUN/docker-exec"
  rm -f "$DOCKER_SOCK"
  log "starting dockerd on $DOCKER_SOCK (log: $STATE/dockerd.log)"
  setsid dockerd -H "unix://$DOCKER_SOCK" --data-root "$STATE/docker-data" \
    --exec-root "$RUN/docker-exec" --pidfile "$DOCKERD_PID.daemon" \
    --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --log-level=warn </dev/null >>"$STATE/dockerd.log" 2>&1 9>&- &
  echo $! >"$DOCKERD_PID"
  wait_ping "$DOCKER_SOCK" "$DOCKERD_PID" "$STATE/dockerd.log" dockerd
}

start_podman() {
  STEP="start podman service"
  cat >"$CONTAINERS_CONF_FILE.new" <<EOF
# Written by scripts/test-env.sh. Root here lacks CAP_SYS_RESOURCE (podman's default ulimits
# fail), crun does not support this host's hybrid cgroups, and there is no systemd.
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$RUN/podman-tmp"
EOF
  mv "$CONTAINERS_CONF_FILE.new" "$CONTAINERS_CONF_FILE"
  {
    echo "# Written by scripts/test-env.sh: the test registries on 127.0.0.1 speak plain HTTP."
    echo 'unqualified-search-registries = []'
    local port
    for ((port = REGISTRY_PORT_FIRST; port < REGISTRY_PORT_FIRST + REGISTRY_PORT_COUNT; port++)); do
      printf '\n[[registry]]\nlocation = "127.0.0.1:%d"\ninsecure = true\n' "$port"
    done
  } >"$REGISTRIES_CONF_FILE.new"
  mv "$REGISTRIES_CONF_FILE.new" "$REGISTRIES_CONF_FILE"
  # A service started with other configuration files is restarted.
  local fp
  fp="$(cat "$CONTAINERS_CONF_FILE" "$REGISTRIES_CONF_FILE" | md5sum | cut -c1-16)"
  if pid_alive "$PODMAN_PID" && ping_sock "$PODMAN_SOCK" &&
    [[ "$(cat "$STATE/podman.config" 2>/dev/null)" == "$fp" ]]; then return 0; fi
  stop_pid "$PODMAN_PID" "podman service"
  mkdir -p "$STATE/podman-root" "$RUN/podman-runroot" "$RUN/podman-tmp" "$STATE/podman-cwd"
  rm -f "$PODMAN_SOCK"
  log "starting podman service on $PODMAN_SOCK (log: $STATE/podman.log)"
  # setsid: a Ctrl-C in the test run does not reach the service; 9>&-: it does not hold our lock.
  pushd "$STATE/podman-cwd" >/dev/null
  CONTAINERS_CONF="$CONTAINERS_CONF_FILE" CONTAINERS_REGISTRIES_CONF="$REGISTRIES_CONF_FILE" setsid podman \
    --root "$STATE/podman-root" --runroot "$RUN/podman-runroot" --storage-driver overlay \
    system service --time=0 "unix://$PODMAN_SOCK" </dev/null >>"$STATE/podman.log" 2>&1 9>&- &
  echo $! >"$PODMAN_PID"
  popd >/dev/null
  wait_ping "$PODMAN_SOCK" "$PODMAN_PID" "$STATE/podman.log" "podman service"
  echo "$fp" >"$STATE/podman.config"
}

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n $d && -x $d/pg_ctl ]] || die "PostgreSQL's programs are not in /usr/lib/postgresql/*/bin"
  echo "$d"
}

pg_as() { runuser -u "$PG_USER" -- "$@"; }

pg_ready() { [[ -f $PG_DIR/port ]] && pg_as "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

start_postgres() {
  STEP="start postgresql"
  if pg_ready; then return 0; fi
  local bin port
  bin="$(pg_bin)"
  pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  mkdir -p "$PG_DIR"
  chown "$PG_USER:" "$PG_DIR"
  chmod 700 "$PG_DIR"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log "initdb + start PostgreSQL on 127.0.0.1:$port (data: $PG_DIR/data, log: $PG_DIR/postgres.log)"
  pg_as "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 || {
    tail -n 20 "$PG_DIR/initdb.log" >&2
    die "initdb failed (log: $PG_DIR/initdb.log)"
  }
  # Loopback only; the socket in the cluster's own folder. Connections for several test files
  # at once, each with its pools.
  pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
    -o "-p $port -k $PG_DIR -h 127.0.0.1 -c max_connections=300" start >/dev/null 9>&- || {
    tail -n 20 "$PG_DIR/postgres.log" >&2
    die "PostgreSQL did not start (log: $PG_DIR/postgres.log)"
  }
  pg_as psql -h "$PG_DIR" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE flotilla LOGIN PASSWORD 'flotilla'" \
    -c "CREATE DATABASE flotilla OWNER flotilla" >/dev/null
  echo "$port" >"$PG_DIR/port"
}

stop_postgres() {
  STEP="stop postgresql"
  [[ -d $PG_DIR ]] || return 0
  if [[ -d $PG_DIR/data ]]; then
    pg_as "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      pg_as "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    log "stopped PostgreSQL ($PG_DIR)"
  fi
  rm -rf "$PG_DIR"
}

# The packages whose files make up the image, with their dependency closure (as installed on
# the host). perl and dpkg come in only through package metadata dependencies; leave them out.
IMAGE_PACKAGES=(bash dash coreutils grep sed findutils python3 libstdc++6 libgcc-s1 ca-certificates)
IMAGE_EXCLUDE='^(perl|perl-base|perl-modules-.*|libperl.*|dpkg|install-info|debconf|openssl)$'

image_fingerprint() {
  {
    echo "recipe $IMAGE_RECIPE"
    dpkg-query -W -f='${Package} ${Version}\n' "${IMAGE_PACKAGES[@]}" 2>/dev/null || true
    if [[ -x /usr/bin/node ]]; then stat -c 'node %s %Y' /usr/bin/node; fi
  } | md5sum | cut -c1-16
}

build_image_tar() {
  STEP="build test image rootfs"
  local fp tar="$STATE/image.tar" rootfs="$STATE/rootfs" pkgs files
  fp="$(image_fingerprint)"
  if [[ -f $tar && -f $STATE/image.fingerprint && "$(cat "$STATE/image.fingerprint")" == "$fp" ]]; then
    return 0
  fi
  log "building the test image's root filesystem from the host's packages"
  rm -rf "$rootfs" "$tar"
  mkdir -p "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/usr/lib" "$rootfs/usr/lib64"
  local d
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$rootfs/$d"; done
  # shellcheck disable=SC2016
  local closure
  closure="$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${IMAGE_PACKAGES[@]}" 2>/dev/null | grep -v '^[ <]' | sort -u |
    grep -Ev "$IMAGE_EXCLUDE")"
  # Virtual and alternative packages in the closure are not installed: keep the installed ones.
  # shellcheck disable=SC2086
  pkgs="$({ dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $closure 2>/dev/null || true; } |
    awk '$1 == "ii" { print $2 }')"
  [[ -n $pkgs ]] || die "no installed packages found for the image"
  files="$STATE/image-files.txt"
  # shellcheck disable=SC2086
  dpkg -L $pkgs | grep '^/' | grep -Ev '^/usr/share/(doc|man|info|locale|lintian|bug)/' |
    sort -u >"$files"
  if [[ -x /usr/bin/node ]]; then echo /usr/bin/node >>"$files"; fi
  tar -C / --no-recursion --ignore-failed-read -cf - -T "$files" 2>>"$STATE/image.log" |
    tar -C "$rootfs" --keep-directory-symlink -xf - 2>>"$STATE/image.log"
  # Users and groups (nobody is what the workers run code as), and the dirs a process expects.
  mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/home" "$rootfs/proc" "$rootfs/sys" \
    "$rootfs/dev" "$rootfs/run" "$rootfs/var/tmp" "$rootfs/workspace"
  chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/bash' \
    'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
  : >"$rootfs/etc/hosts"
  : >"$rootfs/etc/resolv.conf"
  [[ -x $rootfs/usr/bin/python3 && -x $rootfs/bin/bash ]] || die "rootfs lacks python3 or bash"
  chroot "$rootfs" /usr/bin/python3 -c 'import json, subprocess' >>"$STATE/image.log" 2>&1 ||
    die "python3 does not run inside the image's root filesystem (log: $STATE/image.log)"
  tar -C "$rootfs" -cf "$tar.new" .
  mv "$tar.new" "$tar"
  rm -rf "$rootfs"
  echo "$fp" >"$STATE/image.fingerprint"
  # Images imported from an older tarball are stale now.
  rm -f "$STATE/image.docker" "$STATE/image.podman"
}

import_image() {
  local fp
  fp="$(cat "$STATE/image.fingerprint")"
  STEP="import test image into dockerd"
  if [[ "$(cat "$STATE/image.docker" 2>/dev/null)" != "$fp" ]] ||
    ! "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "importing $IMAGE into dockerd"
    "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" import -c 'CMD ["/bin/bash"]' \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$STATE/image.tar" "$IMAGE" >>"$STATE/image.log" 2>&1 ||
      die "docker import failed (log: $STATE/image.log)"
    echo "$fp" >"$STATE/image.docker"
  fi
  STEP="import test image into podman"
  if [[ "$(cat "$STATE/image.podman" 2>/dev/null)" != "$fp" ]] ||
    ! podman_cmd image exists "$IMAGE" >/dev/null 2>&1; then
    log "importing $IMAGE into podman"
    podman_cmd import -c 'CMD ["/bin/bash"]' \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$STATE/image.tar" "$IMAGE" >>"$STATE/image.log" 2>&1 ||
      die "podman import failed (log: $STATE/image.log)"
    echo "$fp" >"$STATE/image.podman"
  fi
}

write_env() {
  STEP="write env.json"
  local has_node=false
  if [[ -x /usr/bin/node ]]; then has_node=true; fi
  cat >"$STATE/env.json.new" <<EOF
{
  "FLOTILLA_TEST_DOCKER_HOST": "unix://$DOCKER_SOCK",
  "FLOTILLA_TEST_PODMAN_HOST": "unix://$PODMAN_SOCK",
  "FLOTILLA_TEST_IMAGE": "$IMAGE",
  "FLOTILLA_TEST_IMAGE_HAS_NODE": "$has_node",
  "FLOTILLA_TEST_REGISTRY_PORTS": "$REGISTRY_PORT_FIRST-$((REGISTRY_PORT_FIRST + REGISTRY_PORT_COUNT - 1))",
  "FLOTILLA_CHROMIUM": "$(command -v chromium || echo /usr/bin/chromium)",
  "FLOTILLA_REDIS_SERVER": "$(command -v redis-server || echo /usr/bin/redis-server)",
  "FLOTILLA_TEST_PG_URL": "postgres://flotilla:flotilla@127.0.0.1:$(cat "$PG_DIR/port")/flotilla",
  "FLOTILLA_TEST_PG_DATA": "$PG_DIR/data",
  "FLOTILLA_TEST_PG_BIN": "$(pg_bin)"
}
EOF
  mv "$STATE/env.json.new" "$STATE/env.json"
}

# Several test runs may share one checkout's environment: each `up` leaves a lease named after
# its caller's pid, and `down` stops the engines only when no leaseholder is alive any more.
LEASES="$STATE/leases"
take_lease() {
  mkdir -p "$LEASES"
  : >"$LEASES/$PPID"
}
live_leases() {
  local f n=0
  for f in "$LEASES"/*; do
    [[ -e $f ]] || continue
    if kill -0 "$(basename "$f")" 2>/dev/null; then n=$((n + 1)); else rm -f "$f"; fi
  done
  echo "$n"
}

up() {
  local t0=$SECONDS
  take_lease
  install_packages
  start_dockerd
  start_podman
  start_postgres
  build_image_tar
  import_image
  write_env
  STEP="done"
  log "up in $((SECONDS - t0)) s: docker unix://$DOCKER_SOCK, podman unix://$PODMAN_SOCK, image $IMAGE, postgresql 127.0.0.1:$(cat "$PG_DIR/port")"
}

# --- down ----------------------------------------------------------------------------------

down() {
  rm -f "$LEASES/$PPID"
  local others
  others="$(live_leases)"
  if [[ ${1:-} != --force && $others -gt 0 ]]; then
    log "leaving the engines running: $others other test run(s) still use them (down --force stops them)"
    return 0
  fi
  STEP="remove dockerd containers"
  if pid_alive "$DOCKERD_PID" && ping_sock "$DOCKER_SOCK"; then
    local ids
    ids="$("$DOCKER_CLI" -H "unix://$DOCKER_SOCK" ps -aq 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [[ -n $ids ]] && "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" rm -f $ids >/dev/null 2>&1 || true
  fi
  STEP="stop dockerd"
  stop_pid "$DOCKERD_PID" dockerd
  rm -f "$DOCKERD_PID.daemon"
  STEP="remove podman containers"
  if [[ -f $CONTAINERS_CONF_FILE ]]; then
    podman_cmd rm -af -t 0 >/dev/null 2>&1 || true
  fi
  STEP="stop podman service"
  stop_pid "$PODMAN_PID" "podman service"
  # podman leaves its storage's overlay mount behind; release it so the folder can be removed.
  # Its exiting processes can mount it again just after: look again until it stays gone.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    grep -qF " $STATE/podman-root" /proc/mounts || break
    grep -F " $STATE/podman-root" /proc/mounts | awk '{ print $2 }' | sort -r |
      xargs -r -n1 umount -l 2>/dev/null || true
    sleep 0.3
  done
  stop_postgres
  rm -f "$STATE/env.json"
  STEP="done"
}

status() {
  if pid_alive "$DOCKERD_PID" && ping_sock "$DOCKER_SOCK"; then
    echo "dockerd: running (pid $(cat "$DOCKERD_PID"), unix://$DOCKER_SOCK)"
  else echo "dockerd: not running"; fi
  if pid_alive "$PODMAN_PID" && ping_sock "$PODMAN_SOCK"; then
    echo "podman service: running (pid $(cat "$PODMAN_PID"), unix://$PODMAN_SOCK)"
  else echo "podman service: not running"; fi
  if pg_ready; then
    echo "postgresql: running (127.0.0.1:$(cat "$PG_DIR/port"), $PG_DIR/data)"
  else echo "postgresql: not running"; fi
  if [[ -f $STATE/env.json ]]; then cat "$STATE/env.json"; fi
}

mkdir -p "$STATE" "$RUN"
# One provisioning at a time (several test runs may start together).
exec 9>"$STATE/.lock"
flock -w 600 9 || die "another test-env.sh held $STATE/.lock for 10 minutes"

case "${1:-}" in
up) up ;;
down) down "${2:-}" ;;
status)
  trap - ERR
  status
  ;;
purge)
  down --force
  STEP="purge"
  # Engine data may hold overlay mounts if a daemon died uncleanly.
  grep -F " $STATE/" /proc/mounts | awk '{ print $2 }' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$STATE"
  [[ $RUN == "$STATE"/* ]] || rm -rf "$RUN"
  ;;
*)
  echo "usage: bash scripts/test-env.sh up|down|status|purge" >&2
  exit 2
  ;;
esac
