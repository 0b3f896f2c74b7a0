#!/usr/bin/env bash
# The one prepared GPU run (bench/device_check.py says what it measures; BENCHMARKS.md gives the device call
# and the time budget of each part).
#   bash bench/device_check.sh --out $OUT          on the GPU machine, with .whl/ carried
#   bash bench/device_check.sh --dry-run --out DIR on a CPU: every part at smoke scale (tests/bench/test_device_check.py)
# PYTHON picks the interpreter (default python3: the GPU machine's, which holds its torch).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
exec "${PYTHON:-python3}" bench/device_check.py "$@"
