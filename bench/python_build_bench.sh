#!/usr/bin/env bash
# Wall seconds of the python role's CPython build on this machine, without and with
# optimisations (python_configure_opts "" vs the default "--enable-optimizations --with-lto"),
# in a Debian 11 container with the role's build dependencies, make -j<CPUs> and the same
# python-build invocation as roles/python/tasks/pyenv.yml. Builds Python 3.11.2 from the
# artifacts of molecule/python_build/fetch-artifacts.sh (run first). Takes ~20 minutes.
# Usage: bench/python_build_bench.sh [configure-opts ...]   (default: "" and the optimised set)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache="$repo/.cache/python_build"
image=${MOLECULE_IMAGE_DEBIAN11:-video-api-molecule/debian:11}
name=python-build-bench-$$
version=3.11.2
if (($#)); then variants=("$@"); else variants=("" "--enable-optimizations --with-lto"); fi

[[ -f $cache/Python-$version.tgz && -f $cache/pyenv-2.5.4.tar.gz ]] ||
  { echo "run molecule/python_build/fetch-artifacts.sh first" >&2; exit 2; }
packages=$("$repo/.venv/bin/python" -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["__python_build_packages"]))' \
  "$repo/roles/python/vars/Debian.yml")

docker run -d --rm --name "$name" "$image" sleep infinity >/dev/null
trap 'docker rm -f "$name" >/dev/null' EXIT
docker exec "$name" mkdir -p /opt/pyenv/cache
docker cp "$cache/Python-$version.tgz" "$name:/opt/pyenv/cache/Python-$version.tar.gz"
docker cp "$cache/pyenv-2.5.4.tar.gz" "$name:/tmp/pyenv.tar.gz"
docker exec "$name" sh -c "tar -C /opt/pyenv --strip-components=1 -xzf /tmp/pyenv.tar.gz &&
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends $packages >/dev/null"

echo "CPython $version, $(nproc) CPUs, make -j$(nproc), $image"
for opts in "${variants[@]}"; do
  start=$(date +%s%N)
  docker exec -e PYTHON_BUILD_CACHE_PATH=/opt/pyenv/cache -e PYTHON_BUILD_SKIP_MIRROR=1 \
    -e _PYTHON_BUILD_FORCE_SKIP_XZ=1 -e PYTHON_CONFIGURE_OPTS="$opts" -e MAKE_OPTS="-j$(nproc)" "$name" \
    sh -c "rm -rf /opt/pyenv/versions/$version && /opt/pyenv/plugins/python-build/bin/python-build $version /opt/pyenv/versions/$version >/tmp/build.log 2>&1" ||
    { docker exec "$name" tail -20 /tmp/build.log >&2; exit 1; }
  end=$(date +%s%N)
  printf 'python_configure_opts=%-36s %5d s wall\n' "\"$opts\"" $(((end - start) / 1000000000))
done
