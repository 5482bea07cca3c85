#!/usr/bin/env bash
# Start the services the test suite uses (PostgreSQL for tests/test_dagster_postgres.py) and
# wait until they accept connections. Idempotent; prints nothing on success. Without a local
# PostgreSQL installation it says so and exits 0: the Postgres test then skips with a reason.
set -euo pipefail

host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
wait_s=${CI_SERVICES_WAIT_S:-60}

ready() { pg_isready -q -h "$host" -p "$port" >/dev/null 2>&1; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
    echo "ci-services: PostgreSQL is not installed (pg_ctlcluster/pg_isready missing); skipping" >&2
    exit 0
fi

if ready; then
    exit 0
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$version" ]; then
    echo "ci-services: no PostgreSQL cluster under /etc/postgresql; skipping" >&2
    exit 0
fi

# "start" fails when the cluster is already starting or running: the wait below decides.
if ! log=$(pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1); then
    ready || echo "$log" >&2
fi

for _ in $(seq "$((wait_s * 4))"); do
    if ready; then
        exit 0
    fi
    sleep 0.25
done
echo "ci-services: PostgreSQL $version/main on $host:$port did not accept connections" \
    "within ${wait_s}s" >&2
pg_lsclusters >&2 || true
exit 1
