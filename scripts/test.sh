#!/usr/bin/env bash
# Runs the whole test suite against real components (Docker engine, containers, PostgreSQL,
# rsyslog), after making sure they are installed and running: the server's tests, then both
# SDKs' tests against live servers. Exits non-zero if any suite failed.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || exit 1
status=0
npm test || status=1
./sdks/test.sh || status=1
if [ "$status" -ne 0 ]; then echo "test suite FAILED"; fi
exit "$status"
