#!/usr/bin/env bash
# Builds the Debian base images the Molecule scenarios boot (systemd as PID 1, python3 for Ansible)
# with debootstrap and `docker import`, because no container registry is reachable here.
# An image already present is left alone. Users with a registry skip this script and point
# MOLECULE_IMAGE_DEBIAN11/12/13 at their own images.
set -euo pipefail

declare -A suites=([11]=bullseye [12]=bookworm [13]=trixie)
if (($#)); then wanted=("$@"); else wanted=(11 12 13); fi

packages=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,sudo

image_for() {
  local var="MOLECULE_IMAGE_DEBIAN$1" default="video-api-molecule/debian:$1"
  echo "${!var:-$default}"
}

build() {
  local version=$1 suite=${suites[$1]} image root log
  image=$(image_for "$version")
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "debian $version: $image present, skipped"
    return 0
  fi
  root=$(mktemp -d "/tmp/debootstrap-$suite.XXXX")
  log="$root.log"
  echo "debian $version: debootstrap $suite (log: $log)"
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$root"
    return 1
  fi
  # Units that have no business in a test container and slow its boot.
  chroot "$root" systemctl mask getty.target systemd-remount-fs.service \
    systemd-udevd.service systemd-modules-load.service >/dev/null 2>&1 || true
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/lib/systemd/systemd"]' \
    - "$image" >/dev/null
  rm -rf "$root" "$log"
  echo "debian $version: built $image"
}

pids=()
for version in "${wanted[@]}"; do
  [[ -n ${suites[$version]:-} ]] || { echo "unknown Debian version: $version (known: ${!suites[*]})" >&2; exit 2; }
  build "$version" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
