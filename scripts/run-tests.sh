#!/usr/bin/env bash
# The whole test suite: lint, format, strict types, then pytest against the
# real Docker engine (runc and gVisor), listing the 40 slowest tests (CI time
# is budgeted). scripts/setup.sh runs this after setup;
# extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STOCKADE_VENV:-$ROOT/.venv}"
cd "$ROOT"

# Tests write nothing into the checkout: caches go to a temporary directory.
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT

echo "== ruff" >&2
export RUFF_CACHE_DIR="$cache/ruff" MYPY_CACHE_DIR="$cache/mypy" HYPOTHESIS_STORAGE_DIRECTORY="$cache/hypothesis"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy --strict" >&2
"$VENV/bin/mypy"
echo "== pytest" >&2
# Screenshots of the approval page's browser tests outlive the temporary directory.
export STOCKADE_TEST_ARTIFACTS="${STOCKADE_TEST_ARTIFACTS:-/tmp/stockade-test-artifacts}"
status=0
"$VENV/bin/pytest" -o cache_dir="$cache" --basetemp="$cache/pytest" --durations=40 "$@" || status=$?
echo "test artifacts (browser screenshots): $STOCKADE_TEST_ARTIFACTS" >&2
exit "$status"
