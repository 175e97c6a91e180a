#!/usr/bin/env bash
# Builds sluice's CPU image from the Dockerfile where no container registry is reachable:
# first a base image made from Debian's packages (bookworm's Python 3.11, as the Dockerfile's
# default base has), then the image on it, with podman. Then, with --run, runs it as TGI's
# `docker run` line would, with the flags that follow.
#
#   scripts/build_image.sh [--run [SLUICE_SERVE_FLAGS...]]
#
# Needs podman, runc (crun fails on some kernels' hybrid cgroups), mmdebstrap and network access
# to Debian's mirror and PyPI. IMAGE (default localhost/sluice:cpu), BASE (default
# localhost/sluice-base:bookworm), DATA (the /data volume, default $HOME/models) and PORT (the
# host's, default 8080) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-localhost/sluice:cpu}
base=${BASE:-localhost/sluice-base:bookworm}

if ! podman image exists "$base"; then
    echo "building $base from Debian's packages"
    # The build host's own CAs go in too, for a TLS-inspecting proxy between it and PyPI.
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
        --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
        bookworm - | podman import --quiet - "$base"
fi

# PyPI's torch is the CUDA build: offer pip PyTorch's CPU build from this machine's pip instead
# (its index, or a local wheel that pip's configuration finds).
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d container-wheels "torch==2.13.0+cpu"

podman build --runtime runc --quiet \
    --build-arg BASE_IMAGE="$base" \
    --build-arg TARGET=cpu \
    --build-arg TORCH_CPU_SOURCE="" \
    --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    --tag "$image" .
podman image ls "$image"

if [ "${1:-}" = --run ]; then
    shift
    data=${DATA:-$HOME/models}
    mkdir -p "$data"
    # Rootful podman's default limits (a million files and processes) exceed what some
    # sandboxes let a container set; the host's file limit and 32,768 threads can be.
    exec podman run --runtime runc --rm --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" \
        --ulimit nproc=32768:32768 -p "${PORT:-8080}:80" -v "$data:/data" "$image" "$@"
fi
