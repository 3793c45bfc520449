#!/usr/bin/env bash
# Create .venv and install Maskloop into it: torch 2.13.0 (CPU build) first, then the project.
# Usage: scripts/install.sh [--test]   (--test adds the test tools)
# Re-running is cheap: nothing is reinstalled while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      python_bin="$candidate"
      break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "Maskloop needs Python 3.11 (the torch 2.13.0 CPU wheel is built for it)." >&2
  echo "Install python3.11, or point PYTHON at one: PYTHON=/path/to/python3.11 $0" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi

stamp=".venv/.maskloop-installed${extras}"
fingerprint=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

pip_quiet=(--quiet --disable-pip-version-check)
echo "==> installing torch 2.13.0 (CPU build)"
# Torch first and pinned: left to the resolver, pip would fetch a CUDA build of several GB.
.venv/bin/python -m pip install "${pip_quiet[@]}" "torch==2.13.0" 2> >(grep -v "is ignored" >&2)
echo "==> installing Maskloop${extras}"
.venv/bin/python -m pip install "${pip_quiet[@]}" -e ".${extras}" 2> >(grep -v "is ignored" >&2)
echo "$fingerprint" >"$stamp"
