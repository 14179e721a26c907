# facegate HTTP service. Built and tested by scripts/build-image.sh and tests/image/ (podman);
# docs/deployment.md, "The image". CPU by default; for NVIDIA GPUs:
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]" -t facegate:gpu .
#   docker run --gpus all ...
# The default model pack is fetched (npm + pip, pinned by sha256) and checked at build time in
# the build stage; the runtime image holds no Node.js, no compiler and needs no network.
# PYTHON_IMAGE: any Debian bookworm with python3 (and python3-venv); scripts/build-image.sh
# passes one made with mmdebstrap where no registry is reachable.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG ONNXRUNTIME=onnxruntime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 FACEGATE_MODEL_DIR=/opt/facegate/models
WORKDIR /src
COPY pyproject.toml README.md ./
COPY facegate ./facegate
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install . \
 && if [ "${ONNXRUNTIME}" != "onnxruntime" ]; then \
      /opt/venv/bin/pip uninstall -y onnxruntime && /opt/venv/bin/pip install "${ONNXRUNTIME}"; \
    fi
# npm only when the upstream archives were not handed in (build-image.sh mounts the ones
# scripts/setup.sh fetched at /opt/facegate/models/downloads); they are checked by sha256 either way.
RUN if [ ! -s /opt/facegate/models/downloads/faceplugin-face-recognition-js-0.0.1.tgz ]; then \
      apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*; \
    fi \
 && /opt/venv/bin/facegate models build && /opt/venv/bin/facegate models list

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACEGATE_MODEL_DIR=/opt/facegate/models \
    FACEGATE_DATA_DIR=/var/lib/facegate \
    FACEGATE_HOST=0.0.0.0 \
    FACEGATE_PORT=8000
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/facegate/models/default /opt/facegate/models/default
RUN groupadd --system --gid 10001 facegate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/facegate --shell /usr/sbin/nologin facegate \
 && mkdir -p /var/lib/facegate && chown facegate:facegate /var/lib/facegate && chmod 700 /var/lib/facegate \
 && facegate models list
USER 10001
WORKDIR /var/lib/facegate
VOLUME ["/var/lib/facegate"]
EXPOSE 8000
# SIGTERM: uvicorn stops accepting and lets requests in flight finish (FACEGATE_GRACEFUL_SHUTDOWN_S).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# Keys: docker exec <container> facegate keys create --role admin --json
CMD ["facegate", "serve"]
