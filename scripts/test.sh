#!/usr/bin/env bash
# The whole suite: lint, pure tests (no root needed) and kernel tests (root, real netns).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check netlab tests scripts
doctests=(
  netlab/topology
  netlab/plan
  netlab/protocols
  netlab/export
  netlab/observe/report
  netlab/observe/decode.py
  netlab/observe/accesslog.py
  netlab/observe/trace.py
  netlab/apply/iptables.py
  netlab/apply/teardown.py
)
python3 -m pytest -q -p no:cacheprovider --doctest-modules "${doctests[@]}" tests "$@"
