#!/usr/bin/env bash
# Runs the whole test suite against real components (Docker engine, containers, PostgreSQL,
# rsyslog), after making sure they are installed and running.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec npm test
