#!/usr/bin/env bash
# Debian packages the demo and the tests need; installs only what is missing.
# Usage: system-deps.sh demo|test. One package per line below; keep the reason beside it.
set -euo pipefail
profile="${1:-test}"
demo_packages=(
    wordnet-base    # real English text for the demo and the paper table: WordNet glosses
    bible-kjv       # ... King James Version verses
    fortunes        # ... fortune cookies; also the scoring workers' integration tests
)
test_packages=(
    redis-server    # the Redis score store's integration tests start a real server
    chromium        # the dashboard's browser tests (tests/browser) run it headless
    chromium-driver # ... driven by selenium through /usr/bin/chromedriver
    docker-compose  # `docker-compose config` checks docker-compose.yml offline (tests/unit/test_deploy_compose.py)
    shellcheck      # lints deploy/**/*.sh as POSIX sh (tests/unit/test_deploy_scripts.py)
)
case "$profile" in
    demo) packages=("${demo_packages[@]}") ;;
    test) packages=("${demo_packages[@]}" "${test_packages[@]}") ;;
    *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac
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
