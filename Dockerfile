# sluice's image, run as TGI's is:
#   docker run -p 8080:80 -v $HOME/models:/data sluice:cpu --model-id ... --max-total-tokens ...
# One Dockerfile, two targets: TARGET=cpu (PyTorch's CPU build) or TARGET=cuda (PyPI's torch,
# which brings its own CUDA libraries: run with --gpus all). scripts/build_image.sh builds it
# where no container registry is reachable, on a base made from Debian's packages.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TARGET=cpu
# Where pip finds PyTorch's CPU build (PyPI's torch is the CUDA one); the wheels in
# container-wheels/ are offered too.
ARG TORCH_CPU_SOURCE="--index-url https://download.pytorch.org/whl/cpu"
# A CA bundle for pip, where a TLS-inspecting proxy stands between the build and PyPI.
ARG PIP_CERT
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ ninja-build \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints ./constraints
COPY sluice ./sluice
COPY container-wheels ./wheels
RUN python3 -m venv /opt/sluice \
    && if [ "$TARGET" = cpu ]; then \
         /opt/sluice/bin/pip install --no-cache-dir --find-links wheels $TORCH_CPU_SOURCE \
             torch==2.13.0 \
         && /opt/sluice/bin/pip install --no-cache-dir -c constraints/cpu.txt . ; \
       else \
         /opt/sluice/bin/pip install --no-cache-dir . ; \
       fi
# The C++ kernels for each x86-64 level, since the final stage has no compiler.
RUN /opt/sluice/bin/python -m sluice.model.kernels.prebuild /opt/sluice/kernels

FROM ${BASE_IMAGE}
COPY --from=build /opt/sluice /opt/sluice
# Port 80 for a user that is not root: the interpreter may bind low ports (Docker allows any
# process that, podman and Kubernetes do not).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_bind_service=+ep "$(readlink -f /opt/sluice/bin/python3)" \
    && apt-get purge -y --auto-remove libcap2-bin \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && useradd --create-home --uid 1000 sluice && mkdir -p /data && chown sluice:sluice /data
USER sluice
# Models and sluice's own cache (the default model is fetched on first run) live in /data.
ENV PATH=/opt/sluice/bin:$PATH \
    HF_HOME=/data \
    XDG_CACHE_HOME=/data \
    SLUICE_KERNELS_DIR=/opt/sluice/kernels \
    PORT=80 \
    PYTHONUNBUFFERED=1
EXPOSE 80
VOLUME /data
ENTRYPOINT ["sluice", "serve"]
