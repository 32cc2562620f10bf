#!/usr/bin/env bash
# Builds the service's image from the top-level Dockerfile (`make image` runs this).
# The wheels come from the roles' controller wheelhouse (roles/video_api/files/controller_artifacts.py,
# cache .cache/wheelhouse), for the Python, glibc and machine of the image's own runtime stage, so
# the build needs no package index. Version label = app.__version__, revision = the git commit.
#   BASE_IMAGE  Debian base (default debian:12-slim; here the local video-api-molecule/debian:12)
#   IMAGE       tag (default video-download-api:<version>; video-download-api:latest is tagged too)
#   APP_UID / APP_GID  the service user's ids (default 10001)
#   DOCKER_BUILD_ARGS  more `docker build` options, e.g. --no-cache
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
base=${BASE_IMAGE:-debian:12-slim}
version=$("$python" -c 'import app; print(app.__version__)')
image=${IMAGE:-video-download-api:$version}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain 2>/dev/null) ]] || revision="$revision-dirty"
source=$(git config --get remote.origin.url || true)
read -ra extra <<<"${DOCKER_BUILD_ARGS:-}"

runtime=$(docker build --quiet "${extra[@]}" --build-arg BASE_IMAGE="$base" --target runtime .)
read -r python_version glibc machine < <(docker run --rm --network none "$runtime" python3 -c \
  'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1], platform.machine())')
wheelhouse=$("$python" roles/video_api/files/controller_artifacts.py wheelhouse --requirements requirements.txt \
  --python-version "$python_version" --glibc "$glibc" --machine "$machine" --cache .cache/wheelhouse |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["dir"])')

docker build "${extra[@]}" --build-arg BASE_IMAGE="$base" --build-arg WHEELHOUSE="$wheelhouse" \
  --build-arg APP_UID="${APP_UID:-10001}" --build-arg APP_GID="${APP_GID:-10001}" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg SOURCE="$source" \
  --tag "$image" --tag video-download-api:latest .
echo "built $image (Python $python_version, glibc $glibc, $machine; wheels from $wheelhouse)"
