# Baclofen CDS — production image.
#
#   podman build -t baclofen-cds:latest .        (or docker build)
#   podman run --rm -e DATABASE_URL=postgresql://... baclofen-cds:latest db upgrade
#   podman run -p 8080:8080 -e DATABASE_URL=postgresql://... baclofen-cds:latest
#
# Two stages: `build` turns the project and every dependency into wheels; the runtime
# stage installs only those wheels into a virtualenv, so no compiler, pip cache, test
# tool or source tree reaches the final image. Configuration comes only from the
# environment (see docs/operations.md). `make image-test` builds and exercises this file.
#
# Reproducible: the base image is pinned by digest (PYTHON_IMAGE; docs/operations.md says
# how to move it), and every Python package comes from the versions in constraints.txt,
# the lock that `make` and CI install from too.

ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build

LABEL org.opencontainers.image.title="baclofen-cds-build"

# Behind a TLS-intercepting proxy, mount its CA bundle into the build and name it here
# (pip reads PIP_* variables); an index mirror can be named the same way. Empty values are
# ignored by pip. These are build-stage arguments only: none reaches the runtime image.
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY cds_hooks ./cds_hooks
COPY cards ./cards
# The locked pip first: the base image's may predate --build-constraint, which pins the
# build backend as --constraint pins the dependencies.
RUN python -m pip install --constraint constraints.txt pip \
    && python -m pip wheel --constraint constraints.txt --build-constraint constraints.txt \
        --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="baclofen-cds" \
      org.opencontainers.image.description="CDS Hooks service checking baclofen orders" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# nginx for `baclofen-cds proxy`: the buffering proxy that production puts in front of
# gunicorn, run from this same image as a second container of the pod (docs/operations.md,
# "Topology"). Debian's package of the base image's release, with its security updates;
# its own service files and default site are never used.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled

# Install from the wheels only (--no-index: nothing is fetched here), then drop the
# virtualenv's own pip and setuptools: the service never installs anything at run time.
# The Flask instance folder is created now so a read-only root filesystem still starts.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels baclofen-cds \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && /opt/venv/bin/python -c "import os; from flask import Flask; os.makedirs(Flask('cds_hooks.app').instance_path, exist_ok=True)" \
    && groupadd --gid 10001 cds \
    && useradd --uid 10001 --gid cds --no-create-home --no-log-init --home-dir /nonexistent \
        --shell /usr/sbin/nologin cds \
    && install --directory --owner=cds --group=cds --mode=0750 /var/lib/baclofen-cds /tmp/prometheus

# Defaults for a single container (gunicorn on 8080, for a trial); Kubernetes overrides
# them from its ConfigMap and Secret: gunicorn on loopback, `proxy` on 8080 in front of it.
# A container is one server per port, so workers take their own SO_REUSEPORT sockets and
# the kernel spreads connections over them (docs/operations.md).
# SQLite suits one instance only: several instances must share a PostgreSQL DATABASE_URL.
ENV CDS_ENV=production \
    CDS_HOST=0.0.0.0 \
    CDS_PORT=8080 \
    DATABASE_URL=sqlite:////var/lib/baclofen-cds/feedback.sqlite3 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    WEB_CONCURRENCY=2 \
    GUNICORN_THREADS=4 \
    GUNICORN_REUSE_PORT=1

USER 10001:10001
WORKDIR /var/lib/baclofen-cds
EXPOSE 8080

# No curl in the slim image: the interpreter that is already there does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CDS_PORT', '8080'), timeout=4).status == 200 else 1)"]

# Exec form: gunicorn's master is PID 1 and receives SIGTERM itself, finishes in-flight
# requests within GUNICORN_GRACEFUL_TIMEOUT, then exits 0. The same image runs the schema
# upgrade before serving (`docker run IMAGE db upgrade`; an init container in Kubernetes).
STOPSIGNAL SIGTERM
ENTRYPOINT ["baclofen-cds"]
CMD ["serve"]
