#!/usr/bin/env bash
# Builds the berth image with Docker alone: a statically linked `berth` FROM scratch,
# running as 65532, tagged IMAGE:VERSION (default berth/berth:<workspace version>).
#
#   crates/cli/build-image.sh                 # build the binary and the image
#   BERTH_IMAGE=registry.example.com/berth crates/cli/build-image.sh
#
# Prints the image reference on its last line.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
image=${BERTH_IMAGE:-berth/berth}
target=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo=${CARGO:-cargo}

# crt-static links glibc into the binary so it runs in an empty image; RUSTFLAGS apply to
# the target only (not build scripts or proc macros) because --target is explicit. The
# flags are the ones `berth build` uses for plugins, so both share compiled dependencies.
rustflags=${RUSTFLAGS:-}
case $rustflags in
  *crt-static*) ;;
  *) rustflags="$rustflags -C target-feature=+crt-static" ;;
esac
# What `cargo run`/`cargo test` set for the programs they start (CARGO_MANIFEST_DIR,
# CARGO_PKG_*, ...) is not passed on: build scripts that watch them (ring's) would run again
# and recompile what `berth build` and `cargo berth` compiled.
unset_vars=(-u CARGO_ENCODED_RUSTFLAGS -u CARGO_MANIFEST_DIR -u CARGO_MANIFEST_PATH -u CARGO_CRATE_NAME
  -u CARGO_BIN_NAME -u CARGO_PRIMARY_PACKAGE -u CARGO_TARGET_TMPDIR)
for name in $(compgen -e); do
  case $name in CARGO_PKG_*) unset_vars+=(-u "$name") ;; esac
done
env "${unset_vars[@]}" RUSTFLAGS="${rustflags# }" \
  "$cargo" build --release --target "$target" -p berth \
  --manifest-path "$root/Cargo.toml" >&2

binary=$target_dir/$target/release/berth
version=$("$binary" --version | awk '{print $2}')

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$root/crates/cli/Dockerfile" "$context/Dockerfile"
cp "$binary" "$context/berth"

docker build --quiet --build-arg "VERSION=$version" --tag "$image:$version" "$context" >&2
size=$(docker image inspect --format '{{.Size}}' "$image:$version")
echo "built $image:$version ($((size / 1024)) KiB)" >&2
echo "$image:$version"
