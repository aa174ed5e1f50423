#!/usr/bin/env bash
# The whole test suite: lint, format, strict types, then pytest against the
# real Docker engine (runc and gVisor), listing the 40 slowest tests of each
# part (CI time is budgeted). scripts/setup.sh runs this after setup.
#
# With no arguments pytest runs in two parts: first every test that can share
# the machine, on STOCKADE_TEST_WORKERS pytest-xdist workers (default 2: most
# tests wait on the engine, so two keep both cores busy), a test module per
# worker; then, alone, the tests that need the machine to themselves (the Ray
# cluster, marker "cluster"; marker "exclusive": an engine restart, a count of
# the host's processes). Arguments, if any, go to a single pytest run as they are.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STOCKADE_VENV:-$ROOT/.venv}"
cd "$ROOT"
workers="${STOCKADE_TEST_WORKERS:-2}"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "STOCKADE_TEST_WORKERS must be a positive whole number, not '$workers'" >&2; exit 2; }

# Tests write nothing into the checkout: caches go to a temporary directory.
# Its path is short: sockets are made under it (a Unix socket's path has at most
# 107 bytes), and pytest-xdist adds a directory per worker.
cache="$(mktemp -d /tmp/stk.XXXXXX)"
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
pytest=("$VENV/bin/pytest" -o cache_dir="$cache" --durations=40)
status=0
if [ "$#" -gt 0 ]; then
    "${pytest[@]}" --basetemp="$cache/pytest" "$@" || status=$?
else
    echo "== pytest, part 1: the tests that share the machine ($workers workers)" >&2
    "${pytest[@]}" --basetemp="$cache/p" -n "$workers" --dist loadfile \
        -m "not cluster and not exclusive" || status=$?
    echo "== pytest, part 2: the tests that need the machine to themselves" >&2
    "${pytest[@]}" --basetemp="$cache/p" -m "cluster or exclusive" || status=$?
fi
echo "test artifacts (browser screenshots): $STOCKADE_TEST_ARTIFACTS" >&2
exit "$status"
