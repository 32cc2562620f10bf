#!/usr/bin/env bash
# Downloads what the python_build scenario serves from its local mirrors, because neither GitHub
# nor python.org is reachable from CI: pyenv from Debian's package and the CPython tarball from
# Debian's source archive, whose .orig tarballs are the upstream release files byte for byte.
# Every file is pinned by sha256; files already present and intact are not fetched again.
# Usage: molecule/python_build/fetch-artifacts.sh   (DEBIAN_MIRROR overrides the archive)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache="$repo/.cache/python_build"
archive=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

pyenv_version=2.5.4
pyenv_deb=pool/main/p/pyenv/pyenv_${pyenv_version}-1_all.deb
pyenv_deb_sha256=3e1d8a48350e131d18330793c7395e4fe3ae36b99afcd499617aaad182f78069
# Python-3.11.2.tgz as pyenv 2.5.4's definition of 3.11.2 pins it.
python_version=3.11.2
python_orig=pool/main/p/python3.11/python3.11_${python_version}.orig.tar.gz
python_sha256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849

fetch() { # fetch ARCHIVE_PATH SHA256 DEST
  local url="$archive/$1" sha=$2 dest=$3
  if [[ -f $dest ]] && sha256sum --quiet -c - <<<"$sha  $dest" 2>/dev/null; then
    echo "present: $dest"
    return 0
  fi
  echo "fetching $url"
  curl -fsSL --retry 3 --connect-timeout 20 -o "$dest.part" "$url"
  if ! sha256sum --quiet -c - <<<"$sha  $dest.part"; then
    echo "checksum mismatch for $url" >&2
    rm -f "$dest.part"
    return 1
  fi
  mv "$dest.part" "$dest"
}

mkdir -p "$cache"
fetch "$python_orig" "$python_sha256" "$cache/Python-$python_version.tgz"

fetch "$pyenv_deb" "$pyenv_deb_sha256" "$cache/pyenv.deb"
# The role's tarball source expects an upstream-style source tree under one top directory.
tarball="$cache/pyenv-$pyenv_version.tar.gz"
if [[ ! -f $tarball || $tarball -ot $cache/pyenv.deb ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  dpkg-deb -x "$cache/pyenv.deb" "$work/deb"
  mv "$work/deb/usr/share/pyenv" "$work/pyenv-$pyenv_version"
  tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -cf - "pyenv-$pyenv_version" | gzip -n >"$tarball.part"
  mv "$tarball.part" "$tarball"
  echo "repacked: $tarball"
fi
sha256sum "$tarball" | cut -d' ' -f1 >"$tarball.sha256"
echo "python_build artifacts ready in $cache"
