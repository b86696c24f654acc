# syntax=docker/dockerfile:1.7
# Scoring workers, the Ray head and the `grace score` job: torch with CUDA + Ray + the client.
# Every process of one Ray cluster must run the same Ray and Python versions, so the head, the GPU
# workers and the job all use this one image.
#   docker build -f deploy/docker/worker.Dockerfile -t grace-coresets/worker:0.1.0 .
# torch comes from the PyTorch wheel index for one CUDA version (TORCH_INDEX_URL); pick the one
# your hosts' NVIDIA driver supports, or .../whl/cpu for a CPU-only image. The version is the same
# pin as pyproject.toml's worker extra, so pip keeps this build when it installs the extra.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/grace \
    && /opt/grace/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
# The scoring node: its package, and the `grace` command's (services/selection); never the lab.
COPY services/selection/ services/selection/
COPY services/workers/ services/workers/
COPY clients/ clients/
RUN /opt/grace/bin/pip install ".[worker]"

FROM ${PYTHON_IMAGE} AS runtime
ARG GRACE_VERSION=0.1.0
LABEL org.opencontainers.image.title="grace-coresets scoring worker" \
      org.opencontainers.image.version="${GRACE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# rsync and ssh: `ray up` syncs file mounts into the node's container with them.
# wget: KubeRay's readiness and liveness probes call Ray's health endpoints with it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends rsync openssh-client wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 grace \
    && useradd --uid 1000 --gid grace --create-home --shell /bin/bash grace
# Owned by the runtime user so that a cluster launcher can add a package (boto3 for `ray up`).
COPY --from=build --chown=1000:1000 /opt/grace /opt/grace
# compute for CUDA, utility for NVML: Ray counts the node's GPUs through NVML. Which GPUs a
# container sees is left to the runtime (compose's device reservation, Kubernetes' device plugin):
# an image-wide NVIDIA_VISIBLE_DEVICES=all would hand every GPU to pods that asked for none.
ENV PATH=/opt/grace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 1000:1000
WORKDIR /home/grace
CMD ["ray", "start", "--help"]
