# syntax=docker/dockerfile:1
# Embedder image: audio decoding and the models, in two variants.
#   docker build -f docker/embedder.Dockerfile --target cpu  -t REGISTRY/audiosearch-embedder:0.1.0-cpu .
#   docker build -f docker/embedder.Dockerfile --target cuda -t REGISTRY/audiosearch-embedder:0.1.0-cuda .
# No weights inside: AUDIOSEARCH_CNN14_CHECKPOINT points into a volume, filled
# by `audiosearch fetch-weights` (an init container) or copied there by hand.

FROM python:3.11.7-slim-bookworm AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml requirements.txt constraints.txt ./
# The embedder's extra in pyproject.toml (the CLI's fetch-weights runs from
# this image too); every version still comes from pyproject.toml/constraints.txt.
ARG EXTRA="embedder"
RUN python -c 'import sys, tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]], sep="\n")' \
        "${EXTRA}" > requirements-image.txt

# The package itself, built once as a wheel for both variants.
FROM deps AS wheel
RUN pip install --no-cache-dir setuptools==84.2.1
COPY README.md ./
COPY stubs ./stubs
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# CPU: torch from PyTorch's CPU index (no CUDA libraries, ~1/10 the size).
# Installed alone first; the second pip call then finds torch==X satisfied by
# X+cpu and resolves everything else from PyPI under the same constraints.
FROM deps AS builder-cpu
RUN pip install --no-cache-dir --no-deps --index-url https://download.pytorch.org/whl/cpu \
        "$(grep -E '^torch==' requirements.txt)" \
 && pip install --no-cache-dir -r requirements-image.txt -c constraints.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl

# CUDA: PyPI's Linux torch wheel is the CUDA build; it pulls the NVIDIA
# runtime libraries as wheels (pinned by torch itself), so no CUDA base image
# is needed, only the host's driver (NVIDIA device plugin / container toolkit).
FROM deps AS builder-cuda
RUN pip install --no-cache-dir -r requirements-image.txt -c constraints.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl

FROM python:3.11.7-slim-bookworm AS runtime
# HOME=/tmp: the root filesystem is read-only in pods; /tmp is an emptyDir
# (torch's compile caches land there too).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    AUDIOSEARCH_LISTEN=0.0.0.0:50052 AUDIOSEARCH_METRICS_LISTEN=0.0.0.0:9090 AUDIOSEARCH_DATA_DIR=/data \
    AUDIOSEARCH_CNN14_CHECKPOINT=/models/Cnn14_mAP=0.431.pth
RUN groupadd --gid 10001 audiosearch \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin audiosearch \
 && install -d -o 10001 -g 10001 /data /models
WORKDIR /data
EXPOSE 50052 9090

FROM runtime AS cuda
# Which GPUs a container sees is left to the device plugin (docker: --gpus):
# NVIDIA_VISIBLE_DEVICES=all here would hand every GPU of the node to
# containers that requested none, such as the fetch-weights init container.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=builder-cuda /opt/venv /opt/venv
USER 10001:10001
CMD ["python", "-m", "services.embedder"]

# Last, so a plain `docker build` gives the CPU image.
FROM runtime AS cpu
COPY --from=builder-cpu /opt/venv /opt/venv
USER 10001:10001
CMD ["python", "-m", "services.embedder"]
