# syntax=docker/dockerfile:1
# The postdeploy operator image.
#
#   docker build -t postdeploy:0.1.0 .
#
# Two stages on the same base: the builder installs the package and its dependencies
# into a virtual environment; the final image holds that environment and nothing else
# (no pip cache, no compilers, no sources). It runs as a numeric non-root user, so the
# kubelet can check runAsNonRoot, and writes nothing outside /tmp, so it runs with a
# read-only root filesystem (the chart mounts an emptyDir at /tmp).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/postdeploy
WORKDIR /src
# Metadata first, so the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
COPY operator ./operator
# Byte-code is compiled here, at build time: the final image cannot write it.
# pip and setuptools are not needed at run time: removing them leaves less to patch.
RUN /opt/postdeploy/bin/pip install . \
 && /opt/postdeploy/bin/python -m compileall -q /opt/postdeploy/lib \
 && /opt/postdeploy/bin/pip uninstall -q -y pip setuptools \
 && /opt/postdeploy/bin/postdeploy --help >/dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="postdeploy" \
      org.opencontainers.image.description="Kubernetes operator that runs the post-deployment checklist"
# A passwd entry for the numeric user: getpass/pwd lookups (kopf's peer identity
# falls back to the user name) must not fail for a user that has no name.
RUN groupadd --system --gid 10001 postdeploy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin postdeploy
COPY --from=builder /opt/postdeploy /opt/postdeploy
ENV PATH=/opt/postdeploy/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
# Numeric, not a name: runAsNonRoot can only be verified for a numeric user.
USER 10001:10001
# 8080: kopf's liveness endpoint (/healthz); 9090: the operator's /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["postdeploy", "run"]
CMD ["--liveness", "http://0.0.0.0:8080/healthz"]
