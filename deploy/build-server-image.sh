#!/usr/bin/env bash
# Builds the images the Compose set-up needs, from Debian packages and without any container
# registry: the Petri server's base (mmdebstrap of Debian 13 "trixie", which has Node.js 20,
# imported with `docker import`), then the Petri image on top of it (a normal `docker build`
# that copies the checkout's build), and the runtime images (`petri images build`).
# Each step is skipped when its result is already there, so a second run takes seconds.
# Usage: deploy/build-server-image.sh   (as root, from anywhere in the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[compose-images] %s\n' "$*" >&2; }

# The server's own build (dist/ and node_modules/) is copied into the image, not rebuilt there:
# the image build then needs no network at all.
# PETRI_BUILD_SKIP_NPM=1: the checkout is already installed and built (scripts/setup.sh did it).
if [ "${PETRI_BUILD_SKIP_NPM:-}" != 1 ]; then
  ./scripts/npm-build.sh
fi

BASE_PACKAGES="nodejs,ca-certificates,bubblewrap"
base_tag=$(printf 'v1 %s' "$BASE_PACKAGES" | sha256sum | cut -c1-12)
BASE="petri/server-base:trixie-$base_tag"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  log "building $BASE from Debian trixie packages ($BASE_PACKAGES) with the host's apt mirror"
  # The host's own mirror (no registry or mirror name is written into Petri), trixie suites.
  mapfile -t mirrors < <(node -e '
    const { hostAptSources, hostCodename } = await import("./dist/src/images/sources.js");
    const host = hostCodename();
    for (const s of hostAptSources("/etc/apt", host)) {
      const suite = s.suite.replace(host, "trixie");
      console.log(`deb${s.signedBy ? ` [signed-by=${s.signedBy}]` : ""} ${s.uri} ${suite} ${s.components.join(" ")}`);
    }' --input-type=module)
  [ "${#mirrors[@]}" -gt 0 ] || { echo "no apt source found in /etc/apt" >&2; exit 1; }
  mmdebstrap --variant=minbase --mode=root --format=tar --include="$BASE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1/var/cache/apt"/*.bin "$1/var/lib/apt/lists"/*_Packages' \
    trixie - "${mirrors[@]}" | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$BASE" >/dev/null
fi
log "base image $BASE"

docker build -q -f deploy/petri.Dockerfile --build-arg "BASE=$BASE" -t petri/server:local . >/dev/null
log "Petri image petri/server:local"

node bin/petri.js images build
