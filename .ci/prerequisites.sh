#!/usr/bin/env bash
# What `make test` needs on the machine: Debian packages and a running Docker engine. As root it
# installs and starts them; otherwise it stops at once, naming exactly what is missing.
set -euo pipefail

needed=()
command -v dockerd >/dev/null || needed+=(docker.io)
command -v debootstrap >/dev/null || needed+=(debootstrap)    # the scenarios' base images
command -v ffmpeg >/dev/null || needed+=(ffmpeg)              # test media, and the service itself
command -v curl >/dev/null || needed+=(curl)
command -v docker-compose >/dev/null || needed+=(docker-compose)  # compose.yaml's test (Compose 1.29)
command -v ip >/dev/null || needed+=(iproute2)  # the OpenAPI test runs the service in a loopback-only namespace
command -v unshare >/dev/null || needed+=(util-linux)
command -v faketime >/dev/null || needed+=(faketime)  # a host whose clock is off (tests/cluster/test_database_faults.py)
command -v chromium >/dev/null || needed+=(chromium)  # the web page's browser tests (tests/api/test_ui_browser.py)
command -v chromedriver >/dev/null || needed+=(chromium-driver)
command -v haproxy >/dev/null || needed+=(haproxy)  # the load balancer routing downloads (tests/test_role_haproxy_routing.py)
command -v promtool >/dev/null || needed+=(prometheus)  # promtool: the alert rules' tests (make lint)
# The PostgreSQL store's tests start a throwaway server of it (tests/support/postgres.py).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || needed+=(postgresql)
if ((${#needed[@]})); then
  if ((EUID != 0)); then
    echo "prerequisites: missing Debian packages: ${needed[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "prerequisites: installing ${needed[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if ((EUID != 0)); then
    echo "prerequisites: the Docker engine is not running (run as root to start it)" >&2
    exit 1
  fi
  echo "prerequisites: starting dockerd"
  nohup dockerd >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/dockerd.log; exit 1; }
fi
