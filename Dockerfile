# The service's container image. Build it with `make image` (molecule/build-service-image.sh), which
# downloads the pinned wheels on the host and passes them in as WHEELHOUSE: nothing in the build
# needs the Python package index, only Debian's mirrors.
ARG BASE_IMAGE=debian:12-slim

# What the service needs at run time, from Debian: Python, FFmpeg, and tini as PID 1.
# build-image.sh reads this stage's Python version, glibc and machine to pick the wheels.
FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ffmpeg tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# The virtualenv, from wheels only (--no-index); pip itself does not go into the final image.
FROM runtime AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ARG WHEELHOUSE=set-by-molecule/build-service-image.sh
COPY requirements.txt /tmp/requirements.txt
COPY ${WHEELHOUSE}/ /tmp/wheels/
RUN python3 -m venv /opt/video-download-api/venv \
    && /opt/video-download-api/venv/bin/pip install --quiet --no-index --no-cache-dir \
       --find-links /tmp/wheels -r /tmp/requirements.txt \
    && /opt/video-download-api/venv/bin/pip uninstall --quiet --yes pip setuptools

FROM runtime
# Fixed ids, so a bind-mounted /data can be chowned to them on the host; override at build time.
ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid "${APP_GID}" video-api \
    && useradd --system --no-log-init --uid "${APP_UID}" --gid video-api \
       --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin video-api \
    && install -d -o video-api -g video-api -m 0750 /data
COPY --from=build /opt/video-download-api/venv /opt/video-download-api/venv
COPY app/ /opt/video-download-api/app/
# Bytecode now, because the root file system is read-only at run time.
RUN /opt/video-download-api/venv/bin/python -m compileall -q /opt/video-download-api/app

ENV PATH=/opt/video-download-api/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    VIDEO_API_DATA_DIR=/data
WORKDIR /opt/video-download-api
VOLUME /data
USER ${APP_UID}:${APP_GID}
EXPOSE 8000
# app/healthcheck.py: GET /api/health over plain HTTP, or with a certificate set over HTTPS pinned to
# that certificate (verified, never off); proxies bypassed; a 503 fails too.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "app.healthcheck"]
# tini forwards SIGTERM to the service (which stops its workers and requeues their tasks) and reaps orphans.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "app"]

# Last, so a new revision changes only the image's metadata, not its layers.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="video-download-api" \
      org.opencontainers.image.description="HTTP service that downloads videos with yt-dlp and extracts audio with FFmpeg" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
