#!/usr/bin/env bash
# The whole suite: lint, pure tests (no root needed) and kernel tests (root, real netns).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check netlab tests scripts
python3 -m pytest -q -p no:cacheprovider --doctest-modules netlab/topology netlab/plan netlab/export netlab/protocols netlab/apply/iptables.py netlab/apply/teardown.py tests "$@"
