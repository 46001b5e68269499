#!/usr/bin/env bash
# Sets up .venv from setup.cfg's pins and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
