#!/usr/bin/env bash
# Command 1 of the README: install, migrate, create the demo admin and project, then serve
# http://127.0.0.1:8000 with an embedded Celery worker. SQLite, no broker, no Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py setup_demo
exec .venv/bin/python manage.py serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
