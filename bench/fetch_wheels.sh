#!/usr/bin/env bash
# Wheels the GPU machine lacks (bench/gpu_wheels.txt lists them and says what the machine has), for Python
# 3.12 on x86-64, into .whl/ (git-ignored). The device tool carries .whl/ with the call; bench/device_check.py
# installs them there (BENCHMARKS.md gives the call). --no-deps everywhere: the machine's own torch/numpy must
# stay. Pins that must agree with each other (pydantic/pydantic-core, datasets/dill/multiprocess,
# omegaconf/antlr4) are read from the wheels' metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}  # DEST=/tmp/x to check that the list resolves without touching the repo
mkdir -p "$DEST"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
get() {  # get NAME[==VERSION]...: binary wheels for CPython 3.12
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$@"
}
requires() {  # requires WHEEL-GLOB NAME: the version specifier WHEEL declares for NAME
  unzip -p "$DEST"/$1 '*/METADATA' | grep -i "^Requires-Dist: $2[ (=<>~!;]" | head -1 \
    | sed -E "s/^Requires-Dist: *$2 *\(?([^;)]*)\)?.*/\1/I" | tr -d ' '
}

mapfile -t LIST < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' bench/gpu_wheels.txt | grep -v '^$')
get "${LIST[@]}"
get "pydantic-core$(requires 'pydantic-*.whl' pydantic-core)"
get "dill$(requires 'datasets-*.whl' dill)" "multiprocess$(requires 'datasets-*.whl' multiprocess)"
# antlr4-python3-runtime is an sdist only: build its (pure-Python) wheel here
"$PY" -m pip wheel -q --no-deps -w "$DEST" "antlr4-python3-runtime$(requires 'omegaconf-*.whl' antlr4-python3-runtime)"
# one version of each: two of one package stop the install there
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then echo "error: several versions in $DEST of: $dupes; empty $DEST and fetch again" >&2; exit 2; fi
ls -1 "$DEST"
du -sh "$DEST"
