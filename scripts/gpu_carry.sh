#!/usr/bin/env bash
# Prepare .gpu_carry/ (git-ignored) for scripts/gpu_check.sh on the lent GPU machine, whose image has
# Python 3.12, torch, Lightning, numpy, scipy and statsmodels but not hydra-core, omegaconf or mlflow:
#   wheels/   optbench (built here) and what the image lacks, for CPython 3.12 on manylinux x86_64
#   MNIST/raw/*.gz   the four MNIST files, gzipped (gpu_check.sh unpacks them)
# It checks that every wheel installs into a clean folder with --no-index for Python 3.12, and that the
# folder and the working tree together stay under the 64 MiB that travel. See scripts/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
DATA="${OPTBENCH_DATA_ROOT:-../shared/data}"
CARRY=.gpu_carry
LIMIT=$((64 * 1024 * 1024))
# What the GPU image lacks, at the versions this checkout is tested with (mlflow-skinny needs these for
# the client and the SQLite store; pure-Python sdists are built into wheels here).
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PACKAGES=(hydra-core omegaconf mlflow-skinny mlflow-tracing sqlalchemy alembic mako sqlparse cachetools
  databricks-sdk gitpython gitdb smmap opentelemetry-api opentelemetry-sdk opentelemetry-proto
  opentelemetry-semantic-conventions python-dotenv pydantic pydantic-core annotated-types typing-inspection
  fastapi starlette uvicorn importlib-metadata google-auth pyasn1 pyasn1-modules filelock)
SDISTS=(antlr4-python3-runtime)

rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/MNIST/raw"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" . 2>/dev/null ||
  "$PY" -m pip wheel -q --no-deps -w "$CARRY/wheels" .
for name in "${SDISTS[@]}"; do "$PY" -m pip wheel -q --no-deps -w "$CARRY/wheels" "$name==$(version "$name")"; done
pins=()
for name in "${PACKAGES[@]}"; do pins+=("$name==$(version "$name")"); done
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$CARRY/wheels" "${pins[@]}"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -9 -c "$DATA/MNIST/raw/$f" > "$CARRY/MNIST/raw/$f.gz"
done

check=$(mktemp -d)
"$PY" -m pip install -q --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" --target "$check" "$CARRY"/wheels/*.whl
rm -rf "$check"
carry=$(du -sb "$CARRY" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
echo "gpu_carry.sh: $(ls "$CARRY/wheels" | wc -l) wheels install for CPython 3.12 (--no-index, clean folder)"
echo "gpu_carry.sh: $CARRY is $((carry / 1024 / 1024)) MiB, the tracked tree $((tree / 1024 / 1024)) MiB;" \
  "together $(((carry + tree) / 1024 / 1024)) of 64 MiB"
[ $((carry + tree)) -lt "$LIMIT" ] || { echo "gpu_carry.sh: over the 64 MiB that travel" >&2; exit 1; }
