#!/usr/bin/env bash
# Start an MLflow tracking server on loopback, for many concurrent writers (parallel sweeps, DDP jobs).
#   scripts/tracking_server.sh [PORT] [BACKEND_STORE_URI]
# Default store: the project's SQLite file mlruns/mlflow.db, artifacts under mlruns/artifacts ($OPTBENCH_ARTIFACTS).
# PostgreSQL: scripts/tracking_server.sh 5000 postgresql://user:password@127.0.0.1:5432/mlflow
#   (needs `pip install psycopg2-binary` in the venv). Point runs at it with
#   optbench-train logger.tracking_uri=http://127.0.0.1:5000   (or export MLFLOW_TRACKING_URI=...)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-${OPTBENCH_MLFLOW_PORT:-5000}}"
BACKEND="${2:-sqlite:///mlruns/mlflow.db}"
ARTIFACTS="${OPTBENCH_ARTIFACTS:-mlruns/artifacts}"
MLFLOW="${MLFLOW:-.venv/bin/mlflow}"
case "$BACKEND" in
  sqlite:///*|postgresql://*|postgresql+*://*|mysql://*|mysql+*://*) ;;
  *) echo "tracking_server.sh: unsupported backend store URI '$BACKEND' (use sqlite:///... or postgresql://...)" >&2; exit 2 ;;
esac
mkdir -p "$ARTIFACTS"
echo "MLflow tracking server on http://127.0.0.1:$PORT (store: $BACKEND, artifacts: $ARTIFACTS)" >&2
exec "$MLFLOW" server --host 127.0.0.1 --port "$PORT" --backend-store-uri "$BACKEND" \
  --artifacts-destination "$ARTIFACTS" --workers 1
