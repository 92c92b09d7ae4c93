#!/usr/bin/env bash
# A Docker engine and the queuectl images for tests/test_containers.py, in CI (as root).
#
#   bash .ci/docker.sh start   install docker.io, docker-compose and mmdebstrap with apt when
#                              missing; start dockerd in the background when no engine answers;
#                              build queuectl-base:bookworm (deploy/build-base.sh, only if that
#                              image is missing) and queuectl:local (deploy/build.sh, always)
#   bash .ci/docker.sh stop    stop the dockerd that `start` started; nothing otherwise
#
# In .ci/run:
#   trap 'bash .ci/docker.sh stop' EXIT
#   bash .ci/docker.sh start
#
# When something outside the project makes it impossible (not root, no apt, a package or the
# Debian archive cannot be fetched, dockerd does not come up), it says so in one line and exits
# 0: the container tests then skip with their reason and CI goes on. A failing `docker build`
# on a working engine is a bug in deploy/ and exits 1.
#
# Sourced (`. .ci/docker.sh`), it only defines ci_docker_start and ci_docker_stop, which run
# the two commands above in a child shell, so nothing here can trip the caller's `set -e`.
#
# Environment: QUEUECTL_CI_DOCKER_STATE (default /tmp/queuectl-ci-docker: dockerd.pid and
# dockerd.log of the dockerd started here), QUEUECTL_BASE_IMAGE, QUEUECTL_IMAGE (see deploy/).

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  _ci_docker_script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/docker.sh
  ci_docker_start() { bash "$_ci_docker_script" start; }
  ci_docker_stop() { bash "$_ci_docker_script" stop; }
  return 0
fi

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

state=${QUEUECTL_CI_DOCKER_STATE:-/tmp/queuectl-ci-docker}
pidfile=$state/dockerd.pid
base=${QUEUECTL_BASE_IMAGE:-queuectl-base:bookworm}
export QUEUECTL_BASE_IMAGE=$base

note() { echo "note: .ci/docker.sh: $*; the container tests will skip"; }
say() { echo ".ci/docker.sh: $*"; }

install_tools() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    note "${missing[*]} missing and no root apt-get to install them"
    return 1
  fi
  local log=$state/apt.log
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${missing[@]}") >"$log" 2>&1; then
    note "could not install ${missing[*]} (apt log: $log)"
    return 1
  fi
  say "installed ${missing[*]}"
}

engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

start_dockerd() {
  if engine_answers; then
    say "a Docker engine is already running; using it (and leaving it running)"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    note "no Docker engine answers and starting dockerd needs root"
    return 1
  fi
  # setsid: dockerd outlives this script and is not in CI's process group; its pid is kept so
  # that `stop` ends exactly this process.
  setsid dockerd >"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local pid
  pid=$(cat "$pidfile")
  for _ in $(seq 120); do
    engine_answers && { say "started dockerd (pid $pid, log $state/dockerd.log)"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 5 "$state/dockerd.log" | sed 's/^/  dockerd: /'
  stop_dockerd >/dev/null
  note "dockerd did not come up (log: $state/dockerd.log)"
  return 1
}

stop_dockerd() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  # Only the dockerd this script started: the pid must still name a dockerd process.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 0
  kill -TERM "$pid"
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || { say "stopped dockerd (pid $pid)"; return 0; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null
  say "dockerd (pid $pid) did not stop within 30 s; killed it"
}

build_images() {
  if docker image inspect "$base" >/dev/null 2>&1; then
    say "base image $base exists; not rebuilding it"
  else
    if ! deploy/build-base.sh "$base" >"$state/build-base.log" 2>&1; then
      tail -n 5 "$state/build-base.log" | sed 's/^/  build-base: /'
      note "could not build the base image $base (log: $state/build-base.log)"
      return 0
    fi
    say "$(tail -n 1 "$state/build-base.log")"
  fi
  local rc=0
  deploy/build.sh >"$state/build.log" 2>&1 || rc=$?
  if [ "$rc" = 3 ]; then  # build.sh: the wheels could not be built (PyPI unreachable)
    tail -n 5 "$state/build.log" | sed 's/^/  build: /'
    note "could not build the wheels (log: $state/build.log)"
    return 0
  elif [ "$rc" != 0 ]; then
    cat "$state/build.log" >&2
    echo ".ci/docker.sh: deploy/build.sh failed on a working engine" >&2
    return 1
  fi
  say "$(tail -n 1 "$state/build.log")"
}

case "${1:-start}" in
  start)
    mkdir -p "$state"
    install_tools || exit 0
    start_dockerd || exit 0
    build_images
    ;;
  stop)
    stop_dockerd
    ;;
  *)
    echo "usage: bash .ci/docker.sh start|stop" >&2
    exit 2
    ;;
esac
