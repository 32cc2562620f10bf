#!/usr/bin/env bash
# Cluster converge benchmark, on Debian 12 systemd containers (images from molecule/build-images.sh):
#   1. fresh and second converge of site.yml on one host (SQLite, no load balancer);
#   2. the same for a cluster: 3 API hosts + db + lb on one Docker network;
#   (second converges: the median of BENCH_ROUNDS runs, 3 by default)
#   3. rolling_update.yml of a changed release over 2 of the API hosts, while a client polls the
#      load balancer: duration and failed requests.
#   bench/cluster_converge_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

image=${MOLECULE_IMAGE_DEBIAN12:-video-api-molecule/debian:12}
network=video-api-bench
solo=video-api-bench-solo
cluster=(video-api-bench-db video-api-bench-lb video-api-bench-api1 video-api-bench-api2 video-api-bench-api3)
work=$(mktemp -d /tmp/cluster-bench.XXXX)
cleanup() {
  docker rm -f "$solo" "${cluster[@]}" >/dev/null 2>&1 || true
  docker network rm "$network" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
docker image inspect "$image" >/dev/null 2>&1 || { echo "missing image $image: run molecule/build-images.sh 12" >&2; exit 2; }
cleanup
docker network create "$network" >/dev/null
# The same container settings as the Molecule scenarios (systemd as PID 1 without --privileged).
for name in "$solo" "${cluster[@]}"; do
  docker run -d --name "$name" --hostname "$name" --network "$network" --cap-add SYS_ADMIN --cap-add NET_ADMIN \
    --security-opt seccomp=unconfined --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    "$image" /lib/systemd/systemd >/dev/null
done
for name in "$solo" "${cluster[@]}"; do
  until docker exec "$name" systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; do sleep 0.5; done
done

mkdir -p "$work/solo" "$work/cluster"
cat >"$work/solo/hosts.yml" <<INVENTORY
video_api:
  hosts:
    $solo:
  vars: {ansible_connection: community.docker.docker}
INVENTORY
cat >"$work/cluster/hosts.yml" <<INVENTORY
all:
  vars: {ansible_connection: community.docker.docker}
video_api_db:
  hosts: {${cluster[0]}: }
video_api_lb:
  hosts: {${cluster[1]}: }
video_api:
  hosts: {${cluster[2]}: , ${cluster[3]}: , ${cluster[4]}: }
  vars: {video_api_host: 0.0.0.0}
INVENTORY
# Every run ships the same snapshot of app/, so an edit made meanwhile cannot count as a change.
cp -r app "$work/app"

# Mitogen's strategy (PyPI `mitogen`, if installed) against the plain connection: it takes over the
# `docker` connection (not community.docker's FQCN), so its runs use an inventory naming that one.
mitogen=$(python -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))' 2>/dev/null || true)
for inventory in solo cluster; do
  sed 's/community.docker.docker/docker/' "$work/$inventory/hosts.yml" >"$work/$inventory/hosts-docker.yml"
done

declare -A seconds changed
run() {  # label inventory playbook [args...]; a label ending in -mitogen runs with Mitogen's strategy
  local label=$1 inventory=$2 playbook=$3 log="$work/$1.log" start end strategy=()
  shift 3
  [[ $label == *-mitogen ]] && strategy=(ANSIBLE_STRATEGY_PLUGINS="$mitogen/plugins/strategy" ANSIBLE_STRATEGY=mitogen_linear)
  start=$(date +%s.%N)
  # One fact cache per inventory, as on an operator's controller: only the fresh converge gathers.
  env "${strategy[@]}" ANSIBLE_CACHE_PLUGIN_CONNECTION="$(dirname "$inventory")/facts" ANSIBLE_NOCOLOR=1 \
    ansible-playbook -i "$inventory" "$playbook" -e "video_api_source_dir=$work/app" "$@" >"$log" 2>&1 \
    || { tail -40 "$log"; exit 1; }
  end=$(date +%s.%N)
  seconds[$label]=$(printf '%.1f' "$(echo "$end - $start" | bc)")
  changed[$label]=$(grep -Eo 'changed=[0-9]+' "$log" | cut -d= -f2 | paste -sd+ | bc)
  printf '%-28s %7s s  changed=%s\n' "$label" "${seconds[$label]}" "${changed[$label]}"
}
rounds=${BENCH_ROUNDS:-3}
repeat() {  # label inventory playbook: the median of $rounds runs, the most changes of any
  local label=$1 round times=() most=0
  for ((round = 1; round <= rounds; round++)); do
    run "$label-$round" "${@:2}"
    times+=("${seconds[$label-$round]}")
    ((changed[$label-$round] > most)) && most=${changed[$label-$round]}
  done
  seconds[$label]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((rounds + 1) / 2))p")
  changed[$label]=$most
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run solo-fresh "$work/solo/hosts.yml" playbooks/site.yml
repeat solo-second "$work/solo/hosts.yml" playbooks/site.yml
if [[ -n $mitogen ]]; then
  repeat solo-second-mitogen "$work/solo/hosts-docker.yml" playbooks/site.yml
fi
run cluster-fresh "$work/cluster/hosts.yml" playbooks/site.yml
repeat cluster-second "$work/cluster/hosts.yml" playbooks/site.yml
if [[ -n $mitogen ]]; then
  repeat cluster-second-mitogen "$work/cluster/hosts-docker.yml" playbooks/site.yml
fi

# A changed release, rolled over two API hosts while a client polls the load balancer.
echo "# bench $(date +%s)" >>"$work/app/__init__.py"
lb=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "${cluster[1]}")
token=$(docker exec "${cluster[2]}" sed -n '/^[^#]/{p;q}' /etc/video-download-api/tokens)
python3 - "$lb" "$token" "$work/stop" >"$work/client.txt" <<'CLIENT' &
import os, sys, time, urllib.request
lb, token, stop = sys.argv[1:]
ok = failed = 0
while not os.path.exists(stop):
    request = urllib.request.Request(f"http://{lb}:8000/api/tasks?limit=5", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            ok += response.status == 200
            failed += response.status != 200
    except OSError:
        failed += 1
    time.sleep(0.05)
print(ok, failed)
CLIENT
client=$!
run rolling-update-2-hosts "$work/cluster/hosts.yml" playbooks/rolling_update.yml \
  --limit "${cluster[2]},${cluster[3]},video_api_db,video_api_lb"
touch "$work/stop"
wait "$client"
read -r ok failed <"$work/client.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

ratio() { echo "scale=2; $1 / $2" | bc; }
echo
printf '%-34s %10s %10s %8s\n' "" "1 host" "cluster" "ratio"
printf '%-34s %9ss %9ss %7sx\n' "fresh converge" "${seconds[solo-fresh]}" "${seconds[cluster-fresh]}" \
  "$(ratio "${seconds[cluster-fresh]}" "${seconds[solo-fresh]}")"
printf '%-34s %9ss %9ss %7sx\n' "second converge" "${seconds[solo-second]}" "${seconds[cluster-second]}" \
  "$(ratio "${seconds[cluster-second]}" "${seconds[solo-second]}")"
printf '%-34s %10s %10s\n' "second converge: changed" "${changed[solo-second]}" "${changed[cluster-second]}"
echo "rolling update of 2 API hosts: ${seconds[rolling-update-2-hosts]} s; client requests: $ok ok, $failed failed"
if [[ -n $mitogen ]]; then
  printf '%-34s %9ss %9ss %7sx\n' "second converge, Mitogen strategy" "${seconds[solo-second-mitogen]}" \
    "${seconds[cluster-second-mitogen]}" "$(ratio "${seconds[cluster-second-mitogen]}" "${seconds[solo-second-mitogen]}")"
  printf '%-34s %10s %10s\n' "second converge, Mitogen: changed" "${changed[solo-second-mitogen]}" \
    "${changed[cluster-second-mitogen]}"
else
  echo "Mitogen not measured: pip install mitogen into .venv"
fi
