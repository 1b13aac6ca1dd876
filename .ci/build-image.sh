#!/usr/bin/env bash
# Build the production grading image HERE, where no image registry can be reached:
#   1. a Debian base: `debootstrap --variant=minbase bookworm` (python3 and venv included) + `docker import`;
#   2. the real Dockerfile on it (`--build-arg BASE=...`): torch and the project's dependencies are installed
#      from the package index, through the build's own network (`--network host`: the daemon has none). Where
#      this machine keeps a copy of the index (/opt/pypi-more, /opt/pypi), it is served on loopback for the
#      build and tried first; PyPI serves the rest.
# Idempotent: an image whose inputs (Dockerfile, packaging, grader/, the torch spec, the base) are unchanged is
# kept when the daemon still holds it. Prints the image's name on its last line.
#   env: IMAGE (default seg-autograder:latest), BASE_IMAGE (default seg-autograder-base:bookworm),
#        TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1"), ROOTFS (default /tmp/seg-rootfs),
#        MIRROR (default http://deb.debian.org/debian). A GPU machine builds the CUDA variant the same way
#        (PyPI's x86_64 torch wheels are CUDA builds).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-seg-autograder:latest}"
BASE_IMAGE="${BASE_IMAGE:-seg-autograder-base:bookworm}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
ROOTFS="${ROOTFS:-/tmp/seg-rootfs}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

inputs_key() {  # what the image is made of: equal keys, equal images
    { cat Dockerfile .dockerignore pyproject.toml; echo "$TORCH_SPEC $BASE_IMAGE";
      find grader -name '*.py' -o -name '*.j2' -o -name '*.css' | LC_ALL=C sort | xargs sha256sum; } \
        | sha256sum | cut -c1-16
}

KEY="$(inputs_key)"
if [ "$(docker image inspect -f '{{ index .Config.Labels "seg-autograder.inputs" }}' "$IMAGE" 2>/dev/null)" = "$KEY" ]; then
    echo "build-image: $IMAGE is up to date (inputs $KEY)" >&2
    echo "$IMAGE"; exit 0
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
    fi
    if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
        as_root rm -rf "$ROOTFS"
        echo "build-image: debootstrap bookworm into $ROOTFS" >&2
        as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" \
            "$MIRROR" >&2
    fi
    # the base trusts what this machine trusts (a proxy in front of the package index may have its own CA)
    as_root cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' | as_root tee "$ROOTFS/etc/pip.conf" >/dev/null
    as_root tar -C "$ROOTFS" -c . | docker import - "$BASE_IMAGE" >&2
fi

index_args=()
server_pid=""
if [ -d /opt/pypi-more/simple ] || [ -d /opt/pypi/simple ]; then  # this machine's copy of the index
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server "$port" --bind 127.0.0.1 --directory /opt >/dev/null 2>&1 &
    server_pid=$!
    trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null' EXIT
    extra=""
    for d in pypi-more pypi; do [ -d "/opt/$d/simple" ] && extra="$extra http://127.0.0.1:$port/$d/simple"; done
    index_args=(--build-arg "PIP_EXTRA_INDEX_URL=${extra# }")
    sleep 1
fi

echo "build-image: building $IMAGE on $BASE_IMAGE (torch: $TORCH_SPEC)" >&2
docker build --network host --build-arg "BASE=$BASE_IMAGE" --build-arg "TORCH_SPEC=$TORCH_SPEC" \
    "${index_args[@]}" --label "seg-autograder.inputs=$KEY" -t "$IMAGE" . >&2
echo "$IMAGE"
