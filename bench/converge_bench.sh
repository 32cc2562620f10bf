#!/usr/bin/env bash
# Converge benchmark: wall time of a fresh converge of one host (a new systemd container) and
# of the second, idempotent converge, with the slowest tasks of each (ansible.posix.profile_tasks).
#
#   bench/converge_bench.sh [debian-version]     # default 12; images from molecule/build-images.sh
#
# BENCH_COLD_CACHE=1 also starts the controller with an empty cache (minimum lookup, code bundle,
# wheel download), as on a controller's very first run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

version=${1:-12}
image_var="MOLECULE_IMAGE_DEBIAN$version"
image=${!image_var:-video-api-molecule/debian:$version}
name="video-api-bench-$version"
work=$(mktemp -d /tmp/converge-bench.XXXX)
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

docker image inspect "$image" >/dev/null 2>&1 || { echo "missing image $image: run molecule/build-images.sh $version" >&2; exit 2; }
docker rm -f "$name" >/dev/null 2>&1 || true
# The same container settings as the Molecule scenario (systemd as PID 1 without --privileged).
docker run -d --name "$name" --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined \
  --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
  "$image" /lib/systemd/systemd >/dev/null
until docker exec "$name" systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; do sleep 0.5; done

cat >"$work/hosts.yml" <<INVENTORY
video_api:
  hosts:
    $name:
      ansible_connection: community.docker.docker
INVENTORY
# Both converges ship the same snapshot of app/, so an edit made meanwhile cannot count as a change.
cp -r app "$work/app"
extra=(-e "video_api_source_dir=$work/app")
if [[ ${BENCH_COLD_CACHE:-0} == 1 ]]; then
  extra+=(-e "video_api_controller_cache_dir=$work/cache" -e "python_controller_cache_dir=$work/cache")
fi

converge() {
  local label=$1 log="$work/$1.log" start end
  start=$(date +%s.%N)
  ANSIBLE_CACHE_PLUGIN_CONNECTION="$work/facts" ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks \
    PROFILE_TASKS_TASK_OUTPUT_LIMIT=8 ANSIBLE_NOCOLOR=1 \
    ansible-playbook -i "$work/hosts.yml" playbooks/site.yml "${extra[@]}" >"$log" 2>&1 || { tail -40 "$log"; exit 1; }
  end=$(date +%s.%N)
  printf '\n%s converge: %.1f s wall, %s\n' "$label" "$(echo "$end - $start" | bc)" \
    "$(grep -Eo "$name +: .*" "$log" | grep -Eo 'ok=[0-9]+ +changed=[0-9]+' | tr -s ' ')"
  echo "slowest tasks:"
  # profile_tasks prints "role : task ---- 1.23s" after the recap; keep name and seconds.
  sed -n '/TASKS RECAP/,$p' "$log" | grep -E -- '-{3,} +[0-9.]+s$' | sed -E 's/ -{3,} +/\t/' | head -8 | sed 's/^/  /'
}

echo "host: $name ($image), controller cache: $([[ ${BENCH_COLD_CACHE:-0} == 1 ]] && echo cold || echo warm)"
# Wall times on a shared machine follow its load; print it next to them.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
converge fresh
converge second
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
