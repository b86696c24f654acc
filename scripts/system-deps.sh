#!/usr/bin/env bash
# Debian packages the tests and the demo need; installs only what is missing.
# One package per line below; keep the reason beside it.
set -euo pipefail
packages=(
    redis-server    # the Redis score store's integration tests start a real server
    chromium        # the dashboard's browser tests (tests/browser) run it headless
    chromium-driver # ... driven by selenium through /usr/bin/chromedriver
    docker-compose  # `docker-compose config` checks docker-compose.yml offline (tests/unit/test_deploy_compose.py)
    shellcheck      # lints deploy/**/*.sh as POSIX sh (tests/unit/test_deploy_scripts.py)
    fortunes        # real English text for the scoring workers' integration tests and benchmark
)
need=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
