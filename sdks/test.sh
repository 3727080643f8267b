#!/usr/bin/env bash
# Builds and tests both SDKs against live Petri servers that the tests start themselves
# (node bin/petri.js serve: needs the server built and Docker running). Runs both suites even
# if the first fails; exits non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-/usr/bin/python3}

if [ ! -f "$ROOT/dist/src/cli/main.js" ]; then
  echo "== building the Petri server (dist/ is missing)"
  (cd "$ROOT" && npm run build) || { echo "server build failed"; exit 1; }
fi

status=0

echo "== TypeScript SDK (sdks/typescript)"
cd "$ROOT/sdks/typescript"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi || { echo "npm install failed"; exit 1; }
npm test --silent || status=1

echo "== Python SDK (sdks/python)"
cd "$ROOT"
"$PYTHON" -m pytest -p no:cacheprovider sdks/python/tests || status=1

if [ "$status" -ne 0 ]; then echo "SDK tests FAILED"; else echo "SDK tests passed"; fi
exit "$status"
