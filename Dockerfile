# registry-canary as a container: `registry-canary run`, the daemon, as a non-root user on a
# read-only root filesystem. Build from the repository root:
#
#     docker build -t registry-canary .
#     docker run --read-only -v /path/to/config.yaml:/etc/registry-canary/config.yaml:ro \
#         -p 9321:9321 registry-canary
#
# The config is read from $CANARY_CONFIG. The daemon writes nothing at run time unless
# `daemon.state_file` is set: point it into the volume, e.g. /var/lib/registry-canary/state.json.
# Both stages use the same base image: the venv's interpreter is a link to its Python.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# A venv without pip or setuptools: the base image's pip installs into it, so the final image
# holds the package and its runtime dependencies and nothing else.
RUN python -m venv --without-pip /opt/registry-canary

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY canary/ canary/
# The project's own metadata says what to install; the lock, as constraints, pins every
# dependency to the versions the test suite ran with. No extras: no dev dependencies.
RUN python -m pip --python /opt/registry-canary/bin/python install --no-cache-dir \
        -c requirements.lock . \
    && /opt/registry-canary/bin/registry-canary --version


FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG SOURCE_URL=https://example.invalid/registry-canary
ARG DOCUMENTATION_URL=${SOURCE_URL}

LABEL org.opencontainers.image.title="registry-canary" \
      org.opencontainers.image.description="Synthetic monitor that pulls long-lived images from container registries and verifies every byte" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.url="${SOURCE_URL}" \
      org.opencontainers.image.documentation="${DOCUMENTATION_URL}"

# A numeric UID and GID, so that Kubernetes' runAsNonRoot can verify them without /etc/passwd.
RUN groupadd --system --gid 10001 canary \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin canary \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/registry-canary \
    && install -d -m 0755 /etc/registry-canary

COPY --from=builder /opt/registry-canary /opt/registry-canary

ENV PATH=/opt/registry-canary/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CANARY_CONFIG=/etc/registry-canary/config.yaml \
    CANARY_LISTEN=0.0.0.0:9321

# For `daemon.state_file` (first sightings of tag digests, kept across restarts).
VOLUME ["/var/lib/registry-canary"]
WORKDIR /var/lib/registry-canary

USER 10001:10001

# /, /metrics, /healthz, /readyz, /status
EXPOSE 9321

# `healthcheck` reads $CANARY_LISTEN and asks 127.0.0.1 when the daemon listens on 0.0.0.0.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
    CMD ["registry-canary", "healthcheck"]

ENTRYPOINT ["registry-canary", "run"]
