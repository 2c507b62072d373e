# syntax=docker/dockerfile:1
# Web image: the HTTP/JSON API, /docs and the web page, a client of the gateway.
#   docker build -f docker/web.Dockerfile -t REGISTRY/audiosearch-web:0.1.0 .

FROM python:3.11.7-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt ./
# The service's extra in pyproject.toml, installed before the code is copied
# so that this layer is rebuilt only when the pins change; every version
# still comes from pyproject.toml/constraints.txt.
ARG EXTRA="web"
RUN python -c 'import sys, tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]], sep="\n")' \
        "${EXTRA}" > requirements-image.txt \
 && pip install --no-cache-dir -r requirements-image.txt -c constraints.txt \
 && pip install --no-cache-dir setuptools==84.2.1
COPY README.md ./
COPY stubs ./stubs
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && pip uninstall --yes setuptools

FROM python:3.11.7-slim-bookworm AS runtime
# HOME=/tmp: the root filesystem is read-only in pods; /tmp is an emptyDir.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    AUDIOSEARCH_HTTP_LISTEN=0.0.0.0:8080
COPY --from=builder /opt/venv /opt/venv
RUN groupadd --gid 10001 audiosearch \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin audiosearch \
 && install -d -o 10001 -g 10001 /data
WORKDIR /data
EXPOSE 8080
USER 10001:10001
CMD ["python", "-m", "services.web"]
