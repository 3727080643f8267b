#!/usr/bin/env bash
# Installs the npm packages when package-lock.json changed since the last install, then builds.
# Shared by scripts/setup.sh and deploy/build-server-image.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.petri-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  printf '[npm-build] installing npm packages\n' >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
printf '[npm-build] building\n' >&2
npm run --silent build
