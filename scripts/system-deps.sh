#!/usr/bin/env bash
# System pieces the test suite uses beyond pip: Debian's chromium (the browser test drives it
# through Playwright; nothing is downloaded by Playwright itself) and a running PostgreSQL
# (the Postgres-backed Dagster test). Installs what is missing when it can (root with apt-get);
# otherwise says so, and the tests that need it skip with a stated reason.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "system-deps: chromium is not installed (apt-get install chromium as root)" >&2
    fi
fi
bash scripts/ci-services.sh
