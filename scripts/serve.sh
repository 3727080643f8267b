#!/usr/bin/env bash
# One command from a fresh Debian machine (as root) to a working server: installs what is
# missing, builds, builds the runtime image when absent, then serves.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec node bin/petri.js serve
