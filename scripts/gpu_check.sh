#!/usr/bin/env bash
# The GPU check in one call (scripts/gpu_check.md): set up from .gpu_carry/, then the CUDA tests, the
# epoch benchmark, the seed protocol x 5 seeds as one packed-graph sweep into one SQLite store, and the
# comparison of that sweep. Each part has a watchdog (timeout) so that the logs of the parts that ran
# always survive; everything lands in $OUT (default ./gpu_check_out): one log per part, parts.log with each
# part's exit status and seconds, env.log, the store's runs as CSV and the benchmark's ratio lines.
#
#   scripts/gpu_check.sh                       # on the GPU machine: about 8 minutes in all
#   scripts/gpu_check.sh --device cpu --tiny   # here: every part on the CPU, on a tiny slice
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-./gpu_check_out}"
CARRY="${CARRY:-.gpu_carry}"
WORK="${TMPDIR:-/tmp}/optbench-gpu-check"
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/parts.log"
export PYTHONUNBUFFERED=1

part() {  # part NAME SECONDS COMMAND...: run under a watchdog, log to $OUT/NAME.log, record status and time
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (watchdog ${limit}s)" | tee -a "$OUT/parts.log"
  timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc after $(($(date +%s) - start)) s$([ $rc = 124 ] && echo ' (watchdog)')" | tee -a "$OUT/parts.log"
  tail -n 5 "$OUT/$name.log"
}

# -- set-up: the carried wheels (Python 3.12), MNIST unpacked ------------------------------------------
if [ "$DEVICE" = cuda ]; then
  PY="${PYTHON:-python3}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$CARRY"/wheels/*.whl > "$OUT/setup.log" 2>&1 || { echo "gpu_check.sh: the carried wheels did not install" >&2; cat "$OUT/setup.log" >&2; exit 1; }
  export PYTHONPATH="$WORK/site"
else
  PY="${PYTHON:-.venv/bin/python}"
  echo "setup: on the CPU the carried wheels (CPython 3.12) are not installed; gpu_carry.sh checks them" \
    "with a dry run; using $PY" | tee "$OUT/setup.log"
fi
DATA="$WORK/data"
mkdir -p "$DATA/MNIST/raw"
for gz in "$CARRY"/MNIST/raw/*.gz; do
  [ -e "$gz" ] || { echo "gpu_check.sh: no MNIST under $CARRY (run scripts/gpu_carry.sh first)" >&2; exit 1; }
  gunzip -c "$gz" > "$DATA/MNIST/raw/$(basename "$gz" .gz)"
done
{
  date -u; uname -a; "$PY" --version
  "$PY" -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

# -- the parts ---------------------------------------------------------------------------------------
STORE="sqlite:///$OUT/store/mlflow.db"
mkdir -p "$OUT/store"
if [ "$TINY" = 1 ]; then
  BENCH=(--steps 20 --repeats 1)
  SWEEP=(seed=1,2 trainer.max_epochs=1 data.subset=512)
else
  BENCH=(--steps 300 --repeats 3)
  SWEEP=(seed=1,2,3,4,5)
fi
if [ "$DEVICE" = cuda ]; then TRAINER=(trainer=gpu trainer.cuda_graph=true); else TRAINER=(trainer=cpu); fi
export OPTBENCH_DATA_ROOT="$DATA"

part tests 180 "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests/test_cuda.py
part bench 150 "$PY" scripts/bench_epoch.py --device "$DEVICE" --data-root "$DATA" "${BENCH[@]}"
grep -h "ratio\|ms/step" "$OUT/bench.log" > "$OUT/bench_ratios.txt" 2>/dev/null
part sweep 180 "$PY" -m optbench -m experiment=seed_table hydra/launcher=packed "${TRAINER[@]}" "${SWEEP[@]}" \
  sweep_id=gpu-check "logger.tracking_uri=$STORE" trainer.enable_progress_bar=false \
  "hydra.sweep.dir=$WORK/multirun" callbacks.tracking.system_metrics=false
part compare 60 "$PY" -m optbench.cli.compare --tracking-uri "$STORE" --sweep gpu-check --reference seed \
  --html "$OUT/report.html"
part export 30 "$PY" -c "import mlflow, sys; c = mlflow.MlflowClient(sys.argv[1]); e = c.get_experiment_by_name('optbench'); \
mlflow.set_tracking_uri(sys.argv[1]); mlflow.search_runs([e.experiment_id]).to_csv(sys.argv[2], index=False)" \
  "$STORE" "$OUT/runs.csv"
echo "gpu_check.sh: done; $OUT holds the logs (parts.log first)"
