#!/usr/bin/env bash
# The whole suite: lint, pure tests (no root needed) and kernel tests (root, real netns).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check netlab tests scripts
# type check the layers that are fully annotated (settings in pyproject.toml [tool.mypy])
python3 -m mypy netlab/errors.py netlab/names.py netlab/linux netlab/protocols netlab/topology netlab/plan netlab/apply netlab/runtime netlab/lab netlab/observe netlab/teach netlab/export netlab/cli
# --doctest-modules over the whole package: every module's examples run (runtime ones included)
python3 -m pytest -q -p no:cacheprovider --doctest-modules netlab tests "$@"
