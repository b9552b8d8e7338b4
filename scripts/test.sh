#!/usr/bin/env bash
# The whole suite: lint, pure tests (no root needed) and kernel tests (root, real netns).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check netlab tests scripts
# --doctest-modules over the whole package: every module's examples run (runtime ones included)
python3 -m pytest -q -p no:cacheprovider --doctest-modules netlab tests "$@"
