# polku's image: one image for every role of the scale-out deployment
# (docs/deployment.md) and for the embedded server.
#
#   docker build -t polku .
#   docker run --rm polku --help
#   docker run --rm -e POLKU_STORE=postgresql://… -e POLKU_BUS=nats://… polku worker
#
# Two stages: the first builds polku's wheel with its own build backend (hatchling,
# pyproject.toml) and installs it with its runtime dependencies, at the versions
# pinned in constraints.txt, into a virtual environment; the second is a slim
# Python with that environment copied in. No compiler, no test or development
# dependencies, no source tree in the final image.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/polku \
    && /opt/polku/bin/pip install --constraint constraints.txt /wheels/polku-*.whl \
    && /opt/polku/bin/polku --version

FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="polku" \
      org.opencontainers.image.description="Real-time customer journey orchestration: listen, understand, act." \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid so that volumes (the Parquet directory) can be owned by it on
# the host; no login shell. /var/lib/polku/parquet exists in the image, owned by
# polku, so that a named volume mounted there starts out writable by it.
RUN groupadd --system --gid 10001 polku \
    && useradd --system --uid 10001 --gid polku --home-dir /var/lib/polku --shell /usr/sbin/nologin polku \
    && install -d -o polku -g polku -m 0750 /var/lib/polku /var/lib/polku/parquet
COPY --from=build /opt/polku /opt/polku
ENV PATH=/opt/polku/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POLKU_HOST=0.0.0.0 \
    POLKU_PORT=8000
USER polku
WORKDIR /var/lib/polku
EXPOSE 8000
# For the API role (`polku serve`). The other roles listen on no port: compose and
# the orchestrator turn this check off for them (docs/deployment.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('POLKU_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(url, timeout=2).status == 200 else 1)"]
ENTRYPOINT ["polku"]
CMD ["--help"]
