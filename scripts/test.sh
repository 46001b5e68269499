#!/usr/bin/env bash
# Sets up .venv from setup.cfg's pins and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# Every core (test files spread over the workers, one file per worker: tests/conftest.py).
exec .venv/bin/python -m pytest -q -n auto --dist loadgroup "$@"
