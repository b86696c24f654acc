# syntax=docker/dockerfile:1.7
# The selection service: FastAPI + hnswlib + the Redis client. No torch, no Ray.
#   docker build -f deploy/docker/service.Dockerfile -t grace-coresets/service:0.1.0 .
# (from the repository root; deploy/docker/service.Dockerfile.dockerignore keeps .venv out of the
# build context, which needs BuildKit: the default builder of Docker 23+ and of `docker compose`.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# hnswlib compiles with -march=native unless HNSWLIB_NO_NATIVE is set: a wheel tuned to the build
# machine's CPU dies with SIGILL on an older host, so the image is built portable.
ENV HNSWLIB_NO_NATIVE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# g++ builds hnswlib (it ships no wheel for this platform); it stays in this stage only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/grace
WORKDIR /src
# Same pin as pyproject.toml; --no-binary so a cached or foreign -march=native wheel is never used.
RUN /opt/grace/bin/pip install --no-binary hnswlib "hnswlib==0.8.0"
COPY pyproject.toml README.md ./
COPY proto/ proto/
# The service's package alone: no scoring worker, no lab.
COPY services/selection/ services/selection/
COPY clients/ clients/
RUN /opt/grace/bin/pip install ".[service,dashboard,fast]"

FROM ${PYTHON_IMAGE} AS runtime
ARG GRACE_VERSION=0.1.0
LABEL org.opencontainers.image.title="grace-coresets selection service" \
      org.opencontainers.image.version="${GRACE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid so that volumes and Kubernetes' fsGroup agree on who owns the data directory.
RUN groupadd --system --gid 10001 grace \
    && useradd --system --uid 10001 --gid grace --home-dir /var/lib/grace --shell /usr/sbin/nologin grace \
    && install -d -o grace -g grace /var/lib/grace
COPY --from=build /opt/grace /opt/grace
# GRACE_HOST=0.0.0.0: a container must listen beyond loopback, so the service refuses to start
# until GRACE_TOKEN is set as well. NUMBA_CACHE_DIR: site-packages is read-only for this user.
ENV PATH=/opt/grace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    GRACE_HOST=0.0.0.0 \
    GRACE_PORT=8765 \
    GRACE_DATA_DIR=/var/lib/grace
USER 10001:10001
WORKDIR /var/lib/grace
VOLUME ["/var/lib/grace"]
EXPOSE 8765
# /readyz answers 200 only once the store answers and the indexes are loaded; no curl in slim.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GRACE_PORT', '8765') + '/readyz', timeout=4)"]
ENTRYPOINT ["grace"]
CMD ["serve"]
