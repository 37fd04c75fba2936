#!/usr/bin/env bash
# Prints, for each example plugin image built by `berth build --all plugin-images/`: the
# binary size, the image size and the memory of the idle plugin (after start-up and one
# /v1/describe call): the process's VmRSS, the cgroup's anonymous memory, and `docker stats`.
set -euo pipefail

plugins="calculator:0.1.0 file-ops:0.1.0 hello:0.1.0 http-fetch:0.1.0 text-processor:1.0.0"
label=dev.berth.managed-by=berth-measure
trap 'docker rm -f $(docker ps -aq --filter label=$label) >/dev/null 2>&1 || true' EXIT

cgroup_file() { # id file -> path of the memory cgroup file (v1 or v2)
  for base in /sys/fs/cgroup/memory/docker/$1 /sys/fs/cgroup/system.slice/docker-$1.scope /sys/fs/cgroup/docker/$1; do
    [ -e "$base/$2" ] && { echo "$base/$2"; return; }
  done
}

printf '| plugin | binary | image | idle VmRSS | cgroup anon RSS | docker stats |\n|---|---|---|---|---|---|\n'
for spec in $plugins; do
  name=${spec%%:*}
  image=berth/$spec
  image_bytes=$(docker image inspect -f '{{.Size}}' "$image")
  id=$(docker run -d --label $label --read-only --user 65532:65532 --cap-drop ALL \
    --security-opt no-new-privileges --tmpfs /tmp:size=1m --memory 64m "$image")
  binary_bytes=$(docker cp "$id:/plugin" - | tar -xO | wc -c)
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
  for _ in $(seq 100); do curl -fs "http://$ip:8080/healthz" >/dev/null && break; sleep 0.1; done
  curl -fs "http://$ip:8080/v1/describe" >/dev/null
  sleep 2 # let start-up allocations settle before reading idle memory
  rss="n/a"
  if f=$(cgroup_file "$id" memory.stat) && [ -n "$f" ]; then
    rss_bytes=$(awk '$1=="total_rss"||$1=="anon"{print $2; exit}' "$f")
    rss=$(awk -v b="$rss_bytes" 'BEGIN{printf "%.2f MiB", b/1048576}')
  fi
  pid=$(docker inspect -f '{{.State.Pid}}' "$id")
  vmrss=$(awk '$1=="VmRSS:"{printf "%.2f MiB", $2/1024}' "/proc/$pid/status")
  stats=$(docker stats --no-stream --format '{{.MemUsage}}' "$id" | cut -d/ -f1)
  printf '| %s | %.2f MiB | %.2f MiB | %s | %s | %s |\n' "$name" \
    "$(awk -v b="$binary_bytes" 'BEGIN{print b/1048576}')" \
    "$(awk -v b="$image_bytes" 'BEGIN{print b/1048576}')" "$vmrss" "$rss" "$stats"
  docker rm -f "$id" >/dev/null
done
