#!/usr/bin/env bash
# Build the base image for deploy/Dockerfile without pulling anything from a registry:
# mmdebstrap (run on the host, so it uses the host's apt configuration and proxy) writes a
# minimal Debian root with python3 and python3-venv to a tarball, and `docker import` turns it
# into an image (queuectl-base:bookworm by default).
#
#   deploy/build-base.sh [TAG]
#
# Environment: QUEUECTL_BASE_IMAGE (the tag, if no argument), QUEUECTL_BASE_SUITE (bookworm),
# QUEUECTL_BASE_MIRROR (default http://deb.debian.org/debian, with -updates and -security).
# Needs root (mmdebstrap's root mode), mmdebstrap and a Docker engine. About 35 s here.
#
# Why not `FROM debian:bookworm-slim`: pulls from Docker Hub fail on this project's machines,
# and apt inside a build container cannot reach the archive either (the proxy's certificate
# is trusted by the host only), so every package must be fetched on the host.
set -euo pipefail

tag=${1:-${QUEUECTL_BASE_IMAGE:-queuectl-base:bookworm}}
suite=${QUEUECTL_BASE_SUITE:-bookworm}
mirror=${QUEUECTL_BASE_MIRROR:-http://deb.debian.org/debian}
security=${QUEUECTL_BASE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# python3 and python3-venv for the venv queuectl is installed into; passwd for useradd.
# The essential variant has no apt (nothing is installed in the image later: wheels only).
packages=python3,python3-venv,passwd

for tool in mmdebstrap docker; do
  command -v "$tool" >/dev/null || { echo "build-base.sh: $tool not found" >&2; exit 1; }
done

# The host's apt proxy settings, if any, so mmdebstrap fetches the way apt does here.
aptopts=()
while IFS= read -r line; do
  aptopts+=(--aptopt="$line")
done < <(apt-config dump 2>/dev/null | grep -E '^Acquire::(https?|ftp)::Proxy' || true)

hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)  # merged /usr without usrmerge+perl
if command -v eatmydata >/dev/null && [ -d /usr/share/mmdebstrap/hooks/eatmydata ]; then
  hooks+=(--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/queuectl-base.XXXXXX")
trap 'rm -rf "$work"' EXIT

start=$EPOCHREALTIME
echo "mmdebstrap: $suite with $packages" >&2
if ! mmdebstrap --variant=essential --include="$packages" \
  "${hooks[@]}" "${aptopts[@]}" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "$suite" "$work/root.tar" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security $suite-security main" >"$work/mmdebstrap.log" 2>&1; then
  tail -n 30 "$work/mmdebstrap.log" >&2
  echo "build-base.sh: mmdebstrap failed" >&2
  exit 1
fi

docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.opencontainers.image.title=queuectl-base org.opencontainers.image.description=\"Debian $suite with python3, built by mmdebstrap\"" \
  --message "mmdebstrap --variant=essential --include=$packages $suite" \
  "$work/root.tar" "$tag" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$tag")
python=$(docker run --rm --network none "$tag" python3 --version)
awk -v t="$tag" -v p="$python" -v s="$size" -v a="$start" -v b="$EPOCHREALTIME" \
  'BEGIN { printf "built %s (%s, %d MB) in %.1f s\n", t, p, s / 1e6, b - a }'
