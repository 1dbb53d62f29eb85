# syntax=docker/dockerfile:1.7
#
# flexcnn sweep agents for NVIDIA GPUs:  docker build -t flexcnn:0.1.0 .
# Usage and volumes: agents/README.md.
#
# Stages: `deps` is the base image plus the agent user, Python (/opt/python)
# and the locked dependencies (uv.lock, no dev tools: /opt/venv); `project`
# installs flexcnn itself into that venv and keeps just the files it
# added; the runtime stage is `deps` plus those files. uv is mounted into each
# step, never copied, so uv, its cache and the source tree stay out of the
# image. The dependency layer (about 6 GB, mostly PyTorch's CUDA wheels) comes
# before the source: a code change rebuilds and pushes only a small top layer.
# PyTorch's PyPI wheels bring their own CUDA 13 libraries (pinned in uv.lock);
# the CUDA base adds the NVIDIA Container Toolkit hooks and the
# NVIDIA_REQUIRE_CUDA driver check. No secret is read at build time: the W&B
# key and database password arrive at run time (environment or a mounted secret).
#
# Build arguments (the defaults build the published image):
#   BASE_IMAGE     base of every stage: the CUDA base; any glibc Linux with useradd works
#                  (`make test-image` builds on a debootstrapped Debian bookworm)
#   UV_IMAGE       an image holding the uv binary at /uv
#   PYTHON_SOURCE  managed: uv installs its own CPython PYTHON_VERSION into /opt/python;
#                  system: use the base image's python3, which must be PYTHON_VERSION
#   PYTHON_VERSION 3.11
#   UID            the agent user's UID (and GID)
# Behind a TLS-inspecting proxy, give the build your CA bundle as a build secret
# (it is mounted for the PyPI steps only and stored in no layer):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt -t flexcnn:0.1.0 .

ARG BASE_IMAGE=nvidia/cuda:13.2.0-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS deps
ARG UID=1000
ARG PYTHON_VERSION=3.11
ARG PYTHON_SOURCE=managed
# uv's settings for the RUN steps: build arguments, so they stay out of the image's environment.
ARG UV_PYTHON_INSTALL_DIR=/opt/python
ARG UV_PROJECT_ENVIRONMENT=/opt/venv
ARG UV_COMPILE_BYTECODE=1
ARG UV_LINK_MODE=copy
# Ubuntu 24.04 images ship a user "ubuntu" with UID 1000; give that UID to the
# agent user so files in bind-mounted folders belong to a typical host user.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid "${UID}" --user-group --create-home --shell /usr/sbin/nologin flexcnn \
    && mkdir -p /data /cache/torch /cache/wandb /cache/flexcnn /app/runs /opt/python \
    && chown -R flexcnn:flexcnn /data /cache /app
# uv is mounted for each step, never copied: no layer holds it.
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && if [ "${PYTHON_SOURCE}" = managed ]; then uv python install --no-bin "${PYTHON_VERSION}"; fi
# Dependencies before the source: this layer is rebuilt only when uv.lock or
# pyproject.toml change. The two files stay in the image (/opt/lock) as the
# exact list of what /opt/venv holds.
WORKDIR /opt/lock
COPY pyproject.toml uv.lock ./
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && uv sync --frozen --no-dev --no-install-project \
        --python "${PYTHON_VERSION}" --python-preference "only-${PYTHON_SOURCE}"

# flexcnn itself, installed (--no-editable) into the same venv; /stage gets
# only the files this adds (the package, its dist-info, the `flexcnn` script),
# so the runtime image adds a small layer on top of the dependencies.
FROM deps AS project
ARG PYTHON_VERSION=3.11
ARG PYTHON_SOURCE=managed
ARG UV_PYTHON_INSTALL_DIR=/opt/python
ARG UV_PROJECT_ENVIRONMENT=/opt/venv
ARG UV_COMPILE_BYTECODE=1
ARG UV_LINK_MODE=copy
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY flexcnn ./flexcnn
WORKDIR /opt/venv
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && uv sync --frozen --no-dev --no-editable --project /src \
        --python "${PYTHON_VERSION}" --python-preference "only-${PYTHON_SOURCE}" \
    && mkdir -p /stage/opt/venv \
    && cp -a --parents bin/flexcnn lib/python*/site-packages/flexcnn lib/python*/site-packages/flexcnn-*.dist-info \
        /stage/opt/venv/

FROM deps AS runtime
ARG UID=1000
COPY --from=project /stage/ /
WORKDIR /app
# Sweep files name their base config relative to the working directory (configs/...).
COPY --chown=flexcnn:flexcnn configs ./configs
COPY --chown=flexcnn:flexcnn sweeps ./sweeps
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    FLEXCNN_DATA=/data \
    FLEXCNN_CACHE=/cache/flexcnn \
    TORCH_HOME=/cache/torch \
    WANDB_DIR=/app/runs \
    WANDB_CACHE_DIR=/cache/wandb \
    WANDB_CONFIG_DIR=/cache/wandb/config \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# data sets, downloaded weights and caches, run folders (+ offline W&B runs under runs/wandb)
VOLUME ["/data", "/cache", "/app/runs"]
USER ${UID}:${UID}
ENTRYPOINT ["flexcnn"]
CMD ["--help"]
