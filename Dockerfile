# syntax=docker/dockerfile:1
# The sidecar and the pinned opencode in one image. It runs the sidecar by default
# (`opencode-sidecar run`, which starts opencode itself); the Kubernetes manifests in deploy/
# also run `opencode serve` from it as a container of its own.
#
#   docker build -t opencode-sidecar:0.1.0 .
#
# The version of opencode is tools/opencode/package.json's pin; the ARG only restates it so a
# drift fails the build (scripts/install-opencode compares them) and tests/deploy.
ARG OPENCODE_VERSION=1.18.33

# --- opencode, from npm with the committed lockfile --------------------------------------------
FROM node:22.22.2-bookworm-slim AS opencode
ARG OPENCODE_VERSION
WORKDIR /build
COPY tools/opencode/package.json tools/opencode/package-lock.json tools/opencode/
COPY scripts/install-opencode scripts/
# opencode-ai's postinstall links the binary built for this CPU: the AVX2 build when the builder
# has AVX2, else the baseline one. Build on (or for) the kind of CPU the image will run on.
RUN OPENCODE_VERSION="${OPENCODE_VERSION}" scripts/install-opencode /opt/opencode

# --- the sidecar: a wheel of this checkout over pinned dependencies ----------------------------
FROM python:3.11.14-slim-bookworm AS sidecar
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY deploy/requirements.lock deploy/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r deploy/requirements.lock
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
# --no-deps: what runs is the lock, and `pip check` fails the build if the lock lacks something.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/opencode_sidecar-*.whl \
    && /opt/venv/bin/pip check

# --- the image ---------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm
ARG OPENCODE_VERSION
LABEL org.opencontainers.image.title="opencode-sidecar" \
      org.opencontainers.image.description="Runs next to opencode and keeps its provider map in step with an LLM gateway." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# tini is PID 1: with -g a signal goes to the whole process group, and it reaps the orphans that
# opencode's shells and tools leave behind. opencode itself is a self-contained binary (no Node
# at run time); it uses git, and ripgrep from PATH (else it downloads one at first use).
# Not pinned to exact versions (DL3008): Debian drops a superseded version from its mirrors at the
# next security update, which would break every build; the base image's tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ripgrep tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed UID, so that Kubernetes' runAsUser and volume ownership (fsGroup) can name it.
RUN groupadd --gid 10001 opencode \
    && useradd --uid 10001 --gid 10001 --home-dir /home/opencode --create-home \
        --shell /usr/sbin/nologin opencode \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/opencode-sidecar \
    && install -d -o 10001 -g 10001 -m 0755 /workspace

COPY --from=sidecar /opt/venv /opt/venv
COPY --from=opencode /opt/opencode/node_modules/opencode-ai/bin/opencode.exe /usr/local/bin/opencode
RUN test "$(HOME=/tmp/opencode-check opencode --version)" = "${OPENCODE_VERSION}" \
    && rm -rf /tmp/opencode-check

# TINI_SUBREAPER: under `docker run --init` (compose `init: true`) tini is not PID 1; as a
# subreaper it still reaps. OPENCODE_DISABLE_MODELS_FETCH: the sidecar gives opencode every model
# it should know, and models.dev is out of reach in many clusters.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/opencode \
    TINI_SUBREAPER=1 \
    OPENCODE_DISABLE_MODELS_FETCH=1 \
    SIDECAR_LISTEN=0.0.0.0:4097 \
    SIDECAR_STATE_DIR=/var/lib/opencode-sidecar \
    SIDECAR_OPENCODE_BIN=/usr/local/bin/opencode

USER 10001:10001
# opencode's working directory, its default project (SIDECAR_OPENCODE_DIRECTORY).
WORKDIR /workspace
# 4097: the sidecar's API and its pass-through to opencode, the only port to publish. opencode
# (4096) listens on 127.0.0.1 only, in this container or its pod: whoever reaches it runs shell
# commands. The sidecar listens on every address here and so refuses to start without
# SIDECAR_API_KEY (32+ characters): `docker run -e SIDECAR_API_KEY="$(openssl rand -hex 32)" ...`.
EXPOSE 4097

# Python, not curl (the image has none). Loopback on SIDECAR_LISTEN's port, past any HTTP proxy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; port = os.environ.get('SIDECAR_LISTEN', '').rpartition(':')[2] or '4097'; u.build_opener(u.ProxyHandler({})).open(f'http://127.0.0.1:{port}/livez', timeout=4)"]

ENTRYPOINT ["tini", "-g", "--"]
CMD ["opencode-sidecar", "run"]
