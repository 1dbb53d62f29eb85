# syntax=docker/dockerfile:1.7
#
# flexcnn sweep agents for NVIDIA GPUs:  docker build -t flexcnn:0.1.0 .
# Usage and volumes: agents/README.md.
#
# Two stages. The builder installs a uv-managed Python and the locked
# dependencies (uv.lock, no dev tools) into /opt; the runtime stage is the CUDA
# base plus those two folders, so uv, its cache and the build context stay out
# of the image. PyTorch's PyPI wheels bring their own CUDA 13 libraries (pinned
# in uv.lock); the base image adds the NVIDIA Container Toolkit hooks and the
# NVIDIA_REQUIRE_CUDA driver check. No secret is read at build time: the W&B key
# and database password arrive at run time (environment or a mounted secret).

ARG CUDA_IMAGE=nvidia/cuda:13.2.0-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS builder
ARG PYTHON_VERSION=3.11
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv python install "${PYTHON_VERSION}"
# Dependencies first: this layer is rebuilt only when uv.lock or pyproject.toml change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project --python "${PYTHON_VERSION}"
COPY pyproject.toml uv.lock README.md ./
COPY flexcnn ./flexcnn
# --no-editable: flexcnn is installed into /opt/venv, so /src is not needed at run time.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --python "${PYTHON_VERSION}"

FROM ${CUDA_IMAGE} AS runtime
ARG UID=1000
# Ubuntu 24.04 images ship a user "ubuntu" with UID 1000; give that UID to the
# agent user so files in bind-mounted folders belong to a typical host user.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid "${UID}" --user-group --create-home --shell /usr/sbin/nologin flexcnn \
    && mkdir -p /data /cache/torch /cache/wandb /cache/flexcnn /app/runs \
    && chown -R flexcnn:flexcnn /data /cache /app
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
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
