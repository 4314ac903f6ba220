#!/usr/bin/env bash
# Builds the real Dockerfile with podman on a machine without a Docker engine or registry
# access, then runs the image's filesystem in a chroot, read-only apart from the data volume,
# as user 10001, and checks it: health, the health check command, a small training job on the
# MNIST fixture, and a classification.  VERIFY_SKIP_BUILD=1 reuses the last image.
#
#   sudo docker/verify.sh            (as root; takes 10-20 minutes cold)
#
# Base images are made locally: debootstrap'd Debian bookworm imported as
# docker.io/library/debian:bookworm-slim, and the same plus gcc and this machine's Rust
# toolchain imported as docker.io/library/rust:1.95-slim-bookworm.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${VERIFY_WORK:-/var/tmp/dbn-serve-verify}
mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}
port=18080
mkdir -p "$work"

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need podman podman
need debootstrap debootstrap

rootfs() { # rootfs DIR [extra packages]
  if [ ! -x "$1/bin/sh" ]; then
    rm -rf "$1"
    debootstrap --variant=minbase ${2:+--include=$2} bookworm "$1" "$mirror" >/dev/null
  fi
}

echo "== base images (made once; delete them with podman rmi to remake)"
if ! podman image exists docker.io/library/debian:bookworm-slim; then
  rootfs "$work/runtime"
  tar -C "$work/runtime" -c . | podman import - docker.io/library/debian:bookworm-slim >/dev/null
fi
if ! podman image exists docker.io/library/rust:1.95-slim-bookworm; then
rootfs "$work/builder" gcc,libc6-dev,ca-certificates
# This machine reaches crates.io through a proxy whose CA only the host trusts: the local
# builder image carries the host's CA bundle (the Dockerfile itself is unchanged).
cp /etc/ssl/certs/ca-certificates.crt "$work/builder/etc/ssl/certs/ca-certificates.crt"
toolchain=$(rustc --print sysroot)
rm -rf "$work/builder/usr/local/rust" && cp -a "$toolchain" "$work/builder/usr/local/rust"
mkdir -p "$work/builder/usr/local/cargo/bin"
ln -sf /usr/local/rust/bin/cargo "$work/builder/usr/local/cargo/bin/cargo"
ln -sf /usr/local/rust/bin/rustc "$work/builder/usr/local/cargo/bin/rustc"
tar -C "$work/builder" -c . | podman import \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  - docker.io/library/rust:1.95-slim-bookworm >/dev/null
fi

if [ "${VERIFY_SKIP_BUILD:-0}" = 1 ] && podman image exists dbn-serve:verify; then
  echo "== reusing the image dbn-serve:verify"
else
echo "== podman build"
start=$(date +%s)
podman build --format docker --isolation chroot -t dbn-serve:verify "$here"
echo "built in $(( $(date +%s) - start )) s"
podman image inspect dbn-serve:verify --format \
  'user={{.Config.User}} ports={{.Config.ExposedPorts}} volumes={{.Config.Volumes}} healthcheck={{.Config.Healthcheck}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}}'
podman image inspect dbn-serve:verify --format 'size={{.Size}} bytes'
fi

echo "== run the image's filesystem in a chroot"
run="$work/run"
rm -rf "$run" && mkdir -p "$run"
id=$(podman create dbn-serve:verify)
podman export "$id" | tar -x -C "$run"
podman rm "$id" >/dev/null
cp "$here"/tests/fixtures/mnist-subset/* "$run/mnist/"
mkdir -p "$run/proc" "$run/dev" && touch "$run/dev/null" "$run/dev/urandom"
# As a hardened deployment runs it (compose's read_only, Kubernetes' readOnlyRootFilesystem):
# the image's filesystem read-only, the data volume the only writable place.
root="$work/root" vol="$work/volume"
rm -rf "$vol" && mkdir -p "$root" "$vol" && chown 10001:10001 "$vol"
mount --bind "$run" "$root" && mount -o remount,bind,ro "$root"
mount --bind "$vol" "$root/var/lib/dbn-serve"
mount --bind /dev/null "$root/dev/null"; mount --bind /dev/urandom "$root/dev/urandom"
mount -t proc proc "$root/proc"
cleanup() {
  kill "$pid" 2>/dev/null || true; sleep 1
  umount "$root/proc" "$root/dev/null" "$root/dev/urandom" "$root/var/lib/dbn-serve" "$root" 2>/dev/null || true
}
trap cleanup EXIT
if chroot --userspec=10001:10001 "$root" /bin/sh -c ': > /usr/local/bin/probe' 2>/dev/null \
   || chroot "$root" /bin/sh -c ': > /probe' 2>/dev/null; then
  echo "the root filesystem is writable"; exit 1
fi
echo "root filesystem: read-only (even root cannot write to it); data volume: $vol"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DBN_ADDR=127.0.0.1:$port DBN_DATA_DIR=/var/lib/dbn-serve DBN_MNIST_DIR=/mnist DBN_LOG_FORMAT=json \
  chroot --userspec=10001:10001 "$root" /usr/local/bin/dbn-serve serve > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
echo "healthz: $(curl -sf localhost:$port/healthz)"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DBN_ADDR=127.0.0.1:$port chroot --userspec=10001:10001 "$root" /usr/local/bin/dbn-serve healthcheck
job=$(curl -sf -X POST "localhost:$port/v1/jobs" -H 'content-type: application/json' \
  -d '{"name":"verify","architecture":{"hidden":[100,200]},"pretrain":{"epochs":3},"seed":1}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 300); do
  status=$(curl -sf "localhost:$port/v1/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  case $status in succeeded|failed|cancelled) break;; esac; sleep 0.2
done
echo "job $job: $status"
[ "$status" = succeeded ]
model=$(curl -sf "localhost:$port/v1/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["model_id"])')
curl -sf -X POST "localhost:$port/v1/models/$model/classify" -H 'content-type: image/jpeg' \
  --data-binary @"$here/tests/fixtures/test-0-label-7.jpg" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("classified the JPEG of a 7 as", r["predictions"][0]["label"])'
echo "model file owned by: $(stat -c %u "$vol/models/$model.safetensors")"
echo "files the server wrote: $(cd "$vol" && find . -type f | sort | tr '\n' ' ')"
echo "== verified"
