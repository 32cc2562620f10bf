# A stand-in for the official `haproxy:2.6` image, built from the local Debian 12 base where no
# registry is reachable (app/tests/test_container.py builds it for the compose `cluster` profile).
# Debian's HAProxy 2.6, with the official image's user (haproxy), stop signal and default command;
# compose.yaml gives it its configuration.
ARG BASE_IMAGE=debian:12-slim
FROM ${BASE_IMAGE}
# Fixed ids, taken before the package would pick others.
RUN groupadd --system --gid 199 haproxy \
    && useradd --system --no-log-init --uid 199 --gid haproxy --home-dir /var/lib/haproxy \
       --no-create-home --shell /usr/sbin/nologin haproxy \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER 199:199
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
