#!/usr/bin/env bash
# Command 2 of the README: install, then run every check and test.
# The suite runs against PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL, REDIS_URL;
# defaults: the local servers), then the API tests once more on the embedded defaults (SQLite).
# With CI=true a missing PostgreSQL, Redis or Chromium fails the run instead of skipping.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test || exit 1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else return 1; fi; }

# Debian's Chromium for the browser tests (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing Debian's chromium for the browser tests"
  as_root sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null' ||
    echo "could not install chromium (needs root): browser tests will skip outside CI"
fi

# Start the local services if they are installed but stopped.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v redis-server >/dev/null 2>&1 && ! (redis-cli -h 127.0.0.1 ping >/dev/null 2>&1); then
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/maskloop}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/14}"
export MASKLOOP_DATA_DIR="${MASKLOOP_TEST_DATA_DIR:-$(mktemp -d)}"

status=0
echo "==> ruff"
.venv/bin/ruff check . && .venv/bin/ruff format --check . || status=1
echo "==> mypy"
.venv/bin/mypy annotator engine model frontend || status=1
echo "==> pytest on PostgreSQL + Redis"
.venv/bin/python -m pytest "$@" || status=1
echo "==> API tests again on the embedded defaults (SQLite, filesystem broker, in-memory layer)"
env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL \
  MASKLOOP_DATA_DIR="$(mktemp -d)" .venv/bin/python -m pytest -q tests/annotator || status=1
exit $status
