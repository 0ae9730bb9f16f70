#!/usr/bin/env bash
# Build the Debian package (debian/) from this checkout and check it with lintian.
#   tools/build-deb.sh [OUTDIR]      (default: dist/; prints the .deb's path last)
# Builds in a copy of the checkout's files (dpkg-buildpackage writes next to the source
# tree), as `dpkg-buildpackage -us -uc -b`; fails on any lintian error or warning.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/eni-guest"
# The tracked files (and any not yet committed), without the git directory or build output.
tar --exclude=.git --exclude=dist --exclude='__pycache__' --exclude='*.egg-info' -cf - . |
    tar -xf - -C "$work/eni-guest"
# With the system's own tools and Python only (not a pyenv or virtualenv one on PATH), as a
# Debian build machine has them.
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LC_ALL=C.UTF-8)
(cd "$work/eni-guest" && "${clean_env[@]}" dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
    tail -n 80 "$work/build.log" >&2
    echo "tools/build-deb.sh: dpkg-buildpackage failed" >&2
    exit 1
}
changes=$(ls "$work"/eni-guest_*.changes)
# --fail-on warning: the package must be lintian clean (errors and warnings).
"${clean_env[@]}" lintian --fail-on error,warning "$changes" >&2
deb=$(ls "$work"/eni-guest_*_all.deb)
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
