#!/usr/bin/env bash
# Build the queuectl image: wheels for queuectl and every dependency in pyproject.toml are built
# on the host (pip wheel resolves them from the project's metadata, so a new dependency needs no
# change here), then `docker build --network none` installs them from deploy/wheels/.
#
#   deploy/build.sh
#
# Settings, from the environment or else deploy/.env (defaults in brackets):
#   QUEUECTL_BASE_IMAGE  base image [queuectl-base:bookworm, from deploy/build-base.sh];
#                        python:3.11-slim works too where Docker Hub is reachable
#   QUEUECTL_IMAGE       tag to build [queuectl:local]
#   QUEUECTL_UID/_GID    uid and gid that own the home in the image [1000/1000]; use the same
#                        values for compose.yaml (it reads the same variables)
#   PYTHON               the interpreter whose pip builds the wheels [python3]
#
# Exit status: 0 built; 3 the wheels could not be built; anything else, the docker build failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
deploy=$root/deploy

# A setting comes from the environment, else from deploy/.env (the file compose reads), else
# the default: so the image's uid is the one compose.yaml's user: runs with.
setting() {  # NAME DEFAULT
  local value=${!1:-}
  if [ -z "$value" ] && [ -f "$deploy/.env" ]; then
    value=$(sed -n "s/^$1=//p" "$deploy/.env" | tail -n 1 | sed "s/^[\"']//; s/[\"']\$//")
  fi
  echo "${value:-$2}"
}
base=$(setting QUEUECTL_BASE_IMAGE queuectl-base:bookworm)
image=$(setting QUEUECTL_IMAGE queuectl:local)
uid=$(setting QUEUECTL_UID 1000)
gid=$(setting QUEUECTL_GID 1000)
python=${PYTHON:-python3}

if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "build.sh: base image $base not found; build it with deploy/build-base.sh" >&2
  exit 1
fi

# Wheels: all pure Python today. A dependency with compiled wheels would have to match the
# base image's Python and libc; pip install --no-index in the build then says which one failed.
start=$EPOCHREALTIME
rm -rf "$deploy/wheels"
if ! "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$deploy/wheels" "$root"
then
  echo "build.sh: pip wheel failed (is PyPI reachable?)" >&2
  exit 3  # .ci/docker.sh tells this apart from a failing docker build
fi
echo "wheels:" "$deploy"/wheels/*.whl | sed "s|$deploy/wheels/||g"

revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
docker build --network none --quiet \
  --build-arg BASE_IMAGE="$base" \
  --build-arg QUEUECTL_UID="$uid" \
  --build-arg QUEUECTL_GID="$gid" \
  --build-arg QUEUECTL_REVISION="$revision" \
  --tag "$image" "$deploy" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$image")
version=$(docker run --rm --network none "$image" --version)
awk -v i="$image" -v v="$version" -v r="$revision" -v s="$size" -v a="$start" -v b="$EPOCHREALTIME" \
  'BEGIN { printf "built %s (%s, revision %s, %d MB) in %.1f s\n", i, v, r, s / 1e6, b - a }'
