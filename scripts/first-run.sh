#!/usr/bin/env bash
# First-run benchmark: a fresh clone with an empty target/ (crate downloads already in
# ~/.cargo), the README's first command, `cargo berth dev up examples/`, until the first
# successful `berth invoke` through the gateway. Prints the time of each step and the total
# against the target (600 s on 2 cores).
#
#   scripts/first-run.sh            # clones HEAD of this checkout into a temporary folder
#
# It removes the example plugin images and berth/berth:VERSION from the engine first (they
# are what a first run builds), so run it on a machine where nothing else needs them; it
# runs `dev up` on port 0 with its own state folder and ends with `dev down`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
state=$work/state
log=$work/dev-up.log
cleanup() {
  # `cargo berth` runs berth as its child, which can sit in a process group of its own:
  # interrupt cargo's group and cargo's children, then wait for cargo.
  if [[ -n ${dev_pid:-} ]]; then
    kill -INT -- -"$dev_pid" 2>/dev/null || true
    pkill -INT -P "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  if [[ -x ${berth:-} ]]; then BERTH_STATE_DIR=$state "$berth" dev down >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

git clone --quiet "$root" "$work/berth"
cd "$work/berth"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for image in berth/calculator berth/file-ops berth/hello berth/http-fetch berth/text-processor berth/berth; do
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$image" | xargs -r docker image rm -f >/dev/null 2>&1 || true
done
unset BERTH_GATEWAY_IMAGE RUSTFLAGS CARGO_TARGET_DIR

start=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
BERTH_STATE_DIR=$state BERTH_DEV_PORT=0 setsid cargo berth dev up examples/ >"$log" 2>&1 &
dev_pid=$!
berth=$work/berth/target/x86_64-unknown-linux-gnu/release/berth
compiled=
until [[ -x $berth ]] && BERTH_STATE_DIR=$state "$berth" invoke calculator evaluate '{"expression":"2*(3+4)"}' 2>/dev/null | grep -q 14; do
  if ! kill -0 "$dev_pid" 2>/dev/null; then
    echo "dev up ended before the first invoke:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  if [[ -z $compiled && -x $berth ]]; then compiled=$(since "$start"); fi
  sleep 0.5
done
total=$(since "$start")
echo "berth $version, $(nproc) cores"
echo "  cargo berth compiled berth (static, release): ${compiled:-?} s"
grep -E ' done in [0-9.]+ s$' "$log" | sed 's/^/  /'
echo "README command 1 -> first invoke: $total s (target <= 600 s)"
