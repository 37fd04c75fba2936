#!/usr/bin/env bash
# Builds the local base image that stands in for python:3.12-slim, node:20-slim, golang:1.22
# and gcc:12 where no image can be pulled: Debian bookworm's packages installed with
# debootstrap, then `docker import`. Prints the image's tag on standard output.
#
# The tag names the recipe (this file's text, which holds the suite, the package list and
# the mirror default), so an unchanged recipe reuses the image and a changed one builds a
# new one. A file lock keeps concurrent callers (test binaries, .ci/run) from building it
# twice. Needs root (debootstrap) and Debian's mirror.
#
# Exit codes: 0 the tag is printed, 1 the build failed, 3 it cannot be built here
# (debootstrap is not installed, or not root).
set -euo pipefail

SUITE=bookworm
PACKAGES=python3,nodejs,node-typescript,golang-go,gcc,libc6-dev
MIRROR=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPOSITORY=berth-test/debian-langs

recipe_digest=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
tag="$REPOSITORY:$recipe_digest"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "debian-base.sh: debootstrap is not installed; install it (apt-get install -y debootstrap) to build $tag" >&2
  exit 3
fi
if [ "$(id -u)" != 0 ]; then
  echo "debian-base.sh: debootstrap needs root; run as root to build $tag" >&2
  exit 3
fi

exec 9>"${TMPDIR:-/tmp}/berth-debian-langs.lock"
flock 9
# Another caller may have built it while this one waited for the lock.
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/berth-debian-langs.XXXXXX")
cleanup() {
  # debootstrap mounts proc and sys inside the target; never delete through a mount.
  umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

started=$(date +%s)
echo "debian-base.sh: debootstrap $SUITE ($PACKAGES) into $rootfs" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
  >"$rootfs.log" 2>&1; then
  tail -30 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  echo "debian-base.sh: debootstrap failed (log above); is $MIRROR reachable?" >&2
  exit 1
fi
rm -f "$rootfs.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
bootstrapped=$(date +%s)
echo "debian-base.sh: debootstrap took $(( bootstrapped - started ))s; importing as $tag" >&2
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'LABEL dev.berth.recipe=scripts/debian-base.sh' \
  - "$tag" >/dev/null
echo "debian-base.sh: docker import took $(( $(date +%s) - bootstrapped ))s" >&2
echo "$tag"
