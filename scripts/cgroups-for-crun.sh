#!/usr/bin/env bash
# crun refuses to run on a hybrid cgroup host (v1 controllers plus a v2 hierarchy) when the v2
# hierarchy has any controller ("cgroups in hybrid mode not supported, drop all controllers from
# cgroupv2"). Binding each such controller to a v1 hierarchy of its own moves it off v2 (allowed
# while nothing uses it there); then crun works. Idempotent; a no-op on pure v1 or v2 hosts.
# The mounts do not survive a reboot: this runs in every set-up, before dockerd starts.
set -euo pipefail
v2=/sys/fs/cgroup/unified
[ -f "$v2/cgroup.controllers" ] || exit 0
for c in $(cat "$v2/cgroup.controllers"); do
  mountpoint -q "/sys/fs/cgroup/$c" && continue
  if ! mkdir -p "/sys/fs/cgroup/$c" 2>/dev/null; then
    mount -o remount,rw /sys/fs/cgroup
    mkdir -p "/sys/fs/cgroup/$c"
  fi
  mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
done
