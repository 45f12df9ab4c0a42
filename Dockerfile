# syntax=docker/dockerfile:1
# Kiln's one image: `kiln-server serve | migrate | worker | token`.
#
#   docker build -t kiln:gpu .                        # CUDA runtime and CuPy (the default)
#   docker build -t kiln:cpu --build-arg VARIANT=cpu .  # NumPy only, on python:3.12-slim
#
# The dashboard is built in a Node stage, the wheels (engine, server with the dashboard
# and the migrations as package data, every dependency) in a Python stage; the runtime
# installs them from there, without a network or a compiler, and runs as a user of its own.
# Python is 3.12 in every stage: the CUDA base (Ubuntu 24.04) ships it, and the wheels
# built in the Python stage must match it.

ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM node:20-slim AS dashboard
WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
# vite writes it to ../server/kiln_server/dashboard, the server's package data
RUN npm run build

FROM python:3.12-slim AS wheels
ARG VARIANT
WORKDIR /src
COPY engine/ engine/
COPY server/ server/
COPY migrations/ migrations/
COPY --from=dashboard /src/server/kiln_server/dashboard/ server/kiln_server/dashboard/
# CuPy for CUDA 12 (the engine's gpu extra) in the GPU variant only.
RUN extra="$([ "$VARIANT" = gpu ] && echo '[gpu]' || true)" \
    && pip wheel --no-cache-dir --wheel-dir /wheels "./engine$extra" ./server

FROM ${CUDA_IMAGE} AS runtime-gpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM python:3.12-slim AS runtime-cpu

# hadolint ignore=DL3006
FROM runtime-${VARIANT}
ARG VARIANT
# The wheels just built, by name and from there only (--no-index): versions are theirs.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/kiln \
    && /opt/kiln/bin/pip install --no-cache-dir --no-index --find-links /wheels \
       kiln-server "kiln-engine$([ "$VARIANT" = gpu ] && echo '[gpu]' || true)" \
    && useradd --create-home --uid 10001 --user-group kiln \
    && mkdir /data && chown kiln:kiln /data
ENV PATH=/opt/kiln/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    KILN_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8000
# `serve` answers /healthz on port 8000 (a worker or `migrate` has no port: their compose
# services turn this off).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["kiln-server"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
