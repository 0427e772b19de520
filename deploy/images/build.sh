#!/usr/bin/env bash
# Builds MERC's images here with podman, from the Dockerfiles users build, and reports their sizes.
#   deploy/images/build.sh     (make images-local)
#
# Images (the names docker-compose.yml runs):
#   merc:local-gateway   deploy/docker/Dockerfile EXTRA=gateway   (no torch)
#   merc:local-fusion    deploy/docker/Dockerfile EXTRA=fusion    (no torch)
#   merc:local-encoder   deploy/docker/Dockerfile EXTRA=encoder
#   merc-triton:local    deploy/docker/Dockerfile.triton
# Report: $MERC_RUN_DIR/reports/images.json (bytes per image, as podman counts them).
#
# This machine reaches PyPI and Debian but no image registry, so the two base images the
# Dockerfiles name are made here and tagged under those names (bases/*.Containerfile say what they
# hold); users' builds use the real ones. The PyTorch CPU index is out of reach too: the torch the
# Dockerfiles install comes from a local index of PyPI's wheels (the CUDA build: larger images than
# a user's CPU build, reported as measured). podman keeps its layer cache between runs, so a second
# run rebuilds only what changed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../local/env.sh
source "$REPO/deploy/local/env.sh"
here="$REPO/deploy/images"
work="$MERC_RUN_DIR/images"
log="$MERC_RUN_DIR/logs/images.log"
mkdir -p "$work" "$MERC_RUN_DIR/reports"
: >"$log"

export CONTAINERS_CONF="$work/containers.conf"
write_containers_conf "$CONTAINERS_CONF"

for tool in podman buildah mmdebstrap; do
  command -v "$tool" >/dev/null || apt_install podman buildah mmdebstrap uidmap fuse-overlayfs
done

arg_default() { sed -n "s/^ARG $2=//p" "$REPO/deploy/docker/$1" | head -n 1; }
PYTHON_IMAGE=$(arg_default Dockerfile PYTHON_IMAGE)
TRITON_IMAGE=$(arg_default Dockerfile.triton TRITON_IMAGE)
TORCH_VERSION=$(arg_default Dockerfile TORCH_VERSION)
PYTRITON_VERSION=$(arg_default Dockerfile.triton PYTRITON_VERSION)
PIP="${MERC_PYTHON:-$REPO/.venv/bin/python} -m pip"

step() { echo "images: $*"; echo "=== $(date -Is) $*" >>"$log"; }
run() { "$@" >>"$log" 2>&1 || die_with_log "images: '$*' failed" "$log"; }

# ---- bases ----------------------------------------------------------------------------------------
if ! podman image exists localhost/merc-test/debian:bookworm; then
  step "Debian bookworm root filesystem (mmdebstrap)"
  run mmdebstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs.tar" http://deb.debian.org/debian
  run podman import "$work/rootfs.tar" localhost/merc-test/debian:bookworm
  rm -f "$work/rootfs.tar"
fi

ctx="$work/bases"
mkdir -p "$ctx"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
step "base $PYTHON_IMAGE (Debian's Python 3.11)"
# A name without a registry is Docker Hub's, which is where `FROM` looks.
run podman build --pull=never -f "$here/bases/python.Containerfile" -t "docker.io/library/$PYTHON_IMAGE" "$ctx"

if [ ! -x "$ctx/tritonserver/bin/tritonserver" ]; then
  step "Triton $PYTRITON_VERSION's server from the nvidia-pytriton wheel"
  rm -rf "$work/pytriton" "$ctx/tritonserver"
  run $PIP download -q --no-deps -d "$work/pytriton" "nvidia-pytriton==$PYTRITON_VERSION"
  run "${MERC_PYTHON:-$REPO/.venv/bin/python}" -m zipfile -e "$work"/pytriton/nvidia_pytriton-*.whl "$work/pytriton/x"
  mkdir -p "$ctx/tritonserver"
  cp -a "$work/pytriton/x/pytriton/tritonserver/bin" "$work/pytriton/x/pytriton/tritonserver/backends" "$ctx/tritonserver/"
  cp -a "$work/pytriton/x/nvidia_pytriton.libs" "$ctx/tritonserver/lib"
  chmod -R a+rX "$ctx/tritonserver"
  chmod a+x "$ctx/tritonserver/bin/tritonserver"
  rm -rf "$work/pytriton"
fi
step "base $TRITON_IMAGE (Triton from the wheel)"
run podman build --pull=never -f "$here/bases/tritonserver.Containerfile" -t "$TRITON_IMAGE" "$ctx"

# ---- the torch wheels, as a package index the builds reach on 127.0.0.1 ---------------------------
index="$work/torch-index"
if [ ! -f "$index/.torch-$TORCH_VERSION" ]; then
  step "torch $TORCH_VERSION and its dependencies from PyPI (the local index)"
  rm -rf "$index"
  run $PIP download -q -d "$index/files" "torch==$TORCH_VERSION"
  touch "$index/.torch-$TORCH_VERSION"
fi
# PEP 503: /simple/<normalised project name>/ lists its files (a directory listing is enough).
rm -rf "$index/simple"
for wheel in "$index"/files/*; do
  name=$(basename "$wheel" | sed 's/-[0-9].*//' | tr 'A-Z_.' 'a-z--')
  mkdir -p "$index/simple/$name"
  ln -sf "../../files/$(basename "$wheel")" "$index/simple/$name/"
done
# A fixed address: the index URL is a build argument, so it is part of the cache key of every layer
# from the PyTorch install on; a new port each run rebuilt those layers (gigabytes, minutes) each time.
port="${MERC_TORCH_INDEX_PORT:-28099}"
if port_open "$port"; then
  echo "images: port $port is taken; the local PyTorch index needs it (set MERC_TORCH_INDEX_PORT)" >&2
  exit 1
fi
python3 -m http.server --bind 127.0.0.1 --directory "$index" "$port" >>"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
wait_port "$port" 10 || die_with_log "images: the local index did not start" "$log"
torch_index="http://127.0.0.1:$port/simple"

# ---- MERC's images --------------------------------------------------------------------------------
build() {
  local tag=$1 dockerfile=$2
  shift 2
  step "$tag ($dockerfile $*)"
  run podman build --pull=never --network host -f "$REPO/deploy/docker/$dockerfile" \
    --build-arg "TORCH_INDEX_URL=$torch_index" "$@" -t "$tag" "$REPO"
}
started=$(date +%s)
build merc:local-gateway Dockerfile --build-arg EXTRA=gateway
build merc:local-fusion Dockerfile --build-arg EXTRA=fusion
build merc:local-encoder Dockerfile --build-arg EXTRA=encoder
build merc-triton:local Dockerfile.triton

# Earlier runs' build stages, now unnamed and unused (each encoder's holds gigabytes of PyTorch);
# this run's stay as the next run's cache.
run podman image prune -f --filter "until=$started"

# ---- report -------------------------------------------------------------------------------------
{
  echo "{"
  first=1
  for tag in merc:local-gateway merc:local-fusion merc:local-encoder merc-triton:local; do
    size=$(podman image inspect --format '{{.Size}}' "$tag")
    torch=$(podman run --rm --read-only --entrypoint /bin/sh "$tag" -c \
      'for p in /opt/venv /opt/merc/.venv; do ls -d $p/lib/python3*/site-packages/torch 2>/dev/null; done' | grep -c torch || true)
    [ $first = 1 ] || echo ","
    first=0
    base=$PYTHON_IMAGE
    [ "$tag" = merc-triton:local ] && base=$TRITON_IMAGE
    printf '  "%s": {"bytes": %s, "local_base_bytes": %s, "torch": %s}' "$tag" "$size" \
      "$(podman image inspect --format '{{.Size}}' "$base")" "$([ "$torch" -gt 0 ] && echo true || echo false)"
  done
  echo
  echo "}"
} >"$MERC_RUN_DIR/reports/images.json"
step "sizes in $MERC_RUN_DIR/reports/images.json"
cat "$MERC_RUN_DIR/reports/images.json"
