#!/usr/bin/env bash
# Idempotent set-up of everything Petri and its tests need on a Debian machine, as root:
# Debian packages (Docker engine, OCI runtimes, bubblewrap, mmdebstrap, PostgreSQL, rsyslog,
# Prometheus, docker-compose), the Docker daemon with Petri's OCI runtimes registered, npm
# packages, the build, and the runtime image. Each step is skipped when already done.
#
# `petri serve` never changes the host; this script does, and says so line by line ("[setup]
# host change: …"). What it may change: installs Debian packages; writes /etc/docker/daemon.json
# (adds the crun, runsc and runsc-trace runtimes, keeping what is there) and reloads dockerd
# with SIGHUP; starts dockerd when none runs; moves cgroup v2 controllers to v1 hierarchies for
# crun (scripts/cgroups-for-crun.sh); creates /var/log/petri/runsc (0700).
# PETRI_SETUP_HOST=skip leaves the host alone (an operator who manages Docker, cgroups and
# packages): only the npm install, the build and the runtime image are done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
change() { printf '[setup] host change: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh must run as root (it installs packages and starts dockerd)" >&2
  exit 1
fi

PACKAGES=(docker.io crun runsc bubblewrap mmdebstrap debootstrap uidmap iproute2 openssl ca-certificates
          postgresql rsyslog rsyslog-gnutls python3 python3-pytest python3-setuptools python3-wheel
          prometheus docker-compose curl bpftrace tini runc e2fsprogs util-linux mount)
if [ "${PETRI_SETUP_HOST:-}" = skip ]; then
  log "PETRI_SETUP_HOST=skip: leaving packages, Docker, cgroups and /etc alone"
else
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  change "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged PostgreSQL cluster and rsyslog only under systemd; Petri's tests
# start their own instances, so nothing else is needed here.

# Register the OCI runtimes Petri can use. gVisor's ptrace platform works without KVM; with
# Docker's "none" network it must not try to set up its own netstack.
daemon_json_changed=0
node scripts/docker-daemon-json.mjs /etc/docker/daemon.json || { rc=$?; [ "$rc" = 10 ] || exit "$rc"; daemon_json_changed=1; }
[ "$daemon_json_changed" = 0 ] || change "/etc/docker/daemon.json: registered Petri's OCI runtimes (crun, runsc, runsc-trace; runsc with --oci-seccomp)"
[ -d /var/log/petri/runsc ] || change "created /var/log/petri/runsc (0700)"
install -d -m 0700 /var/log/petri/runsc  # runsc-trace writes its strace here (holds env values until read)
# The audit tracer (bpftrace) attaches to syscall tracepoints, which live in tracefs.
if [ ! -d /sys/kernel/tracing/events ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "tracefs could not be mounted: runs of runc, crun and bwrap will not be traced (see petri doctor)"
fi
./scripts/cgroups-for-crun.sh || log "crun: could not adjust cgroups (crun stays unavailable; runc and runsc still work)"

if ! docker info >/dev/null 2>&1; then
  change "starting dockerd"
  mkdir -p /var/log
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log >&2; echo "dockerd did not start" >&2; exit 1; }
elif [ "$daemon_json_changed" = 1 ] || ! docker info --format '{{json .Runtimes}}' | node scripts/docker-daemon-json.mjs --running-matches /etc/docker/daemon.json; then
  change "reloading dockerd (SIGHUP) so it sees the runtimes in /etc/docker/daemon.json"
  # The engine's own pid file: other dockerd instances (tests start their own) are left alone.
  kill -HUP "$(cat /var/run/docker.pid)" 2>/dev/null || pkill -HUP -x dockerd || true
  sleep 1
fi

fi

./scripts/npm-build.sh

# The images the tests use: `standard` (every language's default) and `datascience` (the Python
# data stack). Each is built once (a few minutes; skipped when present).
node bin/petri.js images build standard datascience
