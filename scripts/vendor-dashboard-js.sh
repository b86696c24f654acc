#!/usr/bin/env bash
# Re-vendor the dashboard's JavaScript from the npm registry (maintainers only).
#
# The files it copies are committed, so installing or testing GRACE never needs npm or a CDN.
# Run it to upgrade a library: change the version below, run, look at the diff, run the browser
# tests, commit. It writes the versions, licences and sha256 sums into VENDORED.md.
set -euo pipefail

UPLOT_VERSION="1.6.32"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
static="$root/services/selection/grace_selection/dashboard/static"
vendor="$static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "npm is needed to re-vendor (apt-get install npm)" >&2; exit 1; }

# `npm pack` fetches the published tarball and checks it against the registry's integrity hash.
(cd "$work" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null)
tar -xzf "$work/uplot-${UPLOT_VERSION}.tgz" -C "$work"
integrity="$(cd "$work" && npm view "uplot@${UPLOT_VERSION}" dist.integrity)"
licence="$(node -p "require('$work/package/package.json').license")"

mkdir -p "$vendor"
cp "$work/package/dist/uPlot.iife.min.js" "$vendor/uPlot.iife.min.js"
cp "$work/package/dist/uPlot.min.css" "$vendor/uPlot.min.css"
cp "$work/package/LICENSE" "$vendor/uPlot.LICENSE"

sum() { sha256sum "$1" | cut -d' ' -f1; }
cat >"$static/VENDORED.md" <<EOF
# Vendored front-end files

Copied from the npm registry by \`scripts/vendor-dashboard-js.sh\`; do not edit by hand.
The page loads nothing else from outside this folder (its Content-Security-Policy says
\`default-src 'self'\`), so the dashboard works offline. A unit test checks the sums below.

| file | package | version | licence | npm integrity |
|---|---|---|---|---|
| vendor/uPlot.iife.min.js | uplot | ${UPLOT_VERSION} | ${licence} | ${integrity} |
| vendor/uPlot.min.css | uplot | ${UPLOT_VERSION} | ${licence} | ${integrity} |
| vendor/uPlot.LICENSE | uplot | ${UPLOT_VERSION} | ${licence} | ${integrity} |

## sha256

\`\`\`
$(sum "$vendor/uPlot.iife.min.js")  vendor/uPlot.iife.min.js
$(sum "$vendor/uPlot.min.css")  vendor/uPlot.min.css
$(sum "$vendor/uPlot.LICENSE")  vendor/uPlot.LICENSE
\`\`\`

The 2D embedding map is our own WebGL code (\`map.js\`), not a vendored library: it draws the
projection's float32 buffer as it arrives from the server, with no copy per frame.
EOF
echo "vendored uplot ${UPLOT_VERSION} into $vendor"
