# facegate HTTP service. CPU by default; for NVIDIA GPUs:
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]" -t facegate:gpu .
#   docker run --gpus all ...
# The default model pack is fetched (npm + pip, pinned by sha256) and checked at image build
# time in a builder stage; the runtime image holds no Node.js and needs no network.
# (Not built on the development machines: docker is not available there.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG ONNXRUNTIME=onnxruntime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 FACEGATE_MODEL_DIR=/opt/facegate/models
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY facegate ./facegate
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install . \
 && if [ "${ONNXRUNTIME}" != "onnxruntime" ]; then \
      /opt/venv/bin/pip uninstall -y onnxruntime && /opt/venv/bin/pip install "${ONNXRUNTIME}"; \
    fi
RUN /opt/venv/bin/facegate models build && /opt/venv/bin/facegate models list

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FACEGATE_MODEL_DIR=/opt/facegate/models \
    FACEGATE_DATA_DIR=/var/lib/facegate \
    FACEGATE_HOST=0.0.0.0 \
    FACEGATE_PORT=8000
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/facegate/models/default /opt/facegate/models/default
RUN useradd --system --uid 10001 --home-dir /var/lib/facegate facegate \
 && mkdir -p /var/lib/facegate && chown facegate /var/lib/facegate
USER facegate
VOLUME ["/var/lib/facegate"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
# Keys: docker exec <container> facegate keys create --role admin --json
CMD ["facegate", "serve"]
