#!/usr/bin/env bash
# An MLflow tracking server for many writers (parallel sweeps, DDP jobs, a team), on loopback by default.
#
#   scripts/tracking_server.sh [--port 5000] [--backend sqlite|postgres] [--auth] [--host 127.0.0.1]
#   scripts/tracking_server.sh add-user NAME [--port 5000]          # on a server started with --auth
#   scripts/tracking_server.sh grant NAME EXPERIMENT [EDIT|READ|MANAGE] [--port 5000]   # the admin, likewise
#
# Backends (the store URI, which may hold a password, never appears on a command line):
#   --backend sqlite    (default) SQLite at $OPTBENCH_SQLITE (mlruns/mlflow.db)
#   --backend postgres  a PostgreSQL cluster of its own: Debian's postgresql (installed when missing; needs
#                       root), in $OPTBENCH_PG_DATA (/tmp/optbench-postgres-<port>): cluster/ and a generated
#                       password (file mode 600); on 127.0.0.1:$OPTBENCH_PG_PORT (the server's port + 1) only
#   --backend-uri       an existing database: its URI is read from $MLFLOW_BACKEND_STORE_URI
# Authentication (--auth): MLflow's basic-auth app. The admin password comes from $MLFLOW_AUTH_ADMIN_PASSWORD
# or from the file named by $OPTBENCH_ADMIN_PASSWORD_FILE, never from the command line. add-user reads the
# admin's credentials from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD and the new user's password from
# $OPTBENCH_NEW_USER_PASSWORD (or stdin). Clients then set MLFLOW_TRACKING_USERNAME/_PASSWORD.
# Least privilege: every user may READ everything; a user may write only in experiments they created or
# were granted EDIT on (grant). EDIT on an experiment lets a user change every run in it, anyone's
# (docs/distributed.md). basic_auth.db (password hashes) is created with mode 600.
# Artifacts are served through the server ($OPTBENCH_ARTIFACTS, mlruns/artifacts). The last line printed is
# MLFLOW_TRACKING_URI=http://127.0.0.1:PORT; SIGTERM or Ctrl-C stops the server (and PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
MLFLOW="${MLFLOW:-.venv/bin/mlflow}"
PYTHON="${PYTHON:-$(dirname "$MLFLOW")/python}"
PORT="${OPTBENCH_MLFLOW_PORT:-5000}"
HOST=127.0.0.1
BACKEND=sqlite
AUTH=0
DEFAULT_PERMISSION=READ
ALLOWED_HOSTS=""
die() { echo "tracking_server.sh: $*" >&2; exit 2; }

# The admin's commands on a running --auth server: a new user, a grant on one experiment.
admin_call() {
  [ -n "${MLFLOW_TRACKING_USERNAME:-}" ] && [ -n "${MLFLOW_TRACKING_PASSWORD:-}" ] ||
    die "$1 needs the admin's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"
  MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT" "$PYTHON" -c "$ADMIN_PY" "$@"
}
ADMIN_PY='
import os, sys
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
uri = os.environ["MLFLOW_TRACKING_URI"]
try:
    auth = get_app_client("basic-auth", tracking_uri=uri)
    if sys.argv[1] == "add-user":
        user = auth.create_user(username=sys.argv[2], password=os.environ["OPTBENCH_NEW_USER_PASSWORD"])
        print(f"created user {user.username}")
    else:
        name, experiment, permission = sys.argv[2:5]
        found = mlflow.MlflowClient(uri).get_experiment_by_name(experiment)
        if found is None:
            raise MlflowException(f"no experiment named {experiment!r} on this server")
        auth.grant_user_permission(name, "experiment", found.experiment_id, permission)
        print(f"granted {permission} on experiment {experiment} to {name}")
except (MlflowException, OSError, ValueError) as err:
    message = getattr(err, "message", None) or str(err)
    print(f"tracking_server.sh: {sys.argv[1]}: {message.splitlines()[0]}", file=sys.stderr)
    sys.exit(2)
'

if [ "${1:-}" = add-user ]; then
  shift
  NAME="${1:-}"; [ -n "$NAME" ] || die "add-user NAME [--port P]"; shift
  [ "${1:-}" = --port ] && PORT="$2"
  if [ -z "${OPTBENCH_NEW_USER_PASSWORD:-}" ]; then read -r -s -p "password for $NAME: " OPTBENCH_NEW_USER_PASSWORD; echo; fi
  [ ${#OPTBENCH_NEW_USER_PASSWORD} -ge 12 ] || die "add-user: the password for $NAME must have at least 12 characters"
  OPTBENCH_NEW_USER_PASSWORD="$OPTBENCH_NEW_USER_PASSWORD" admin_call add-user "$NAME"
  exit $?
fi
if [ "${1:-}" = grant ]; then
  shift
  [ $# -ge 2 ] || die "grant NAME EXPERIMENT [EDIT|READ|MANAGE] [--port P]"
  NAME="$1" EXPERIMENT="$2"; shift 2
  PERMISSION=EDIT
  case "${1:-}" in EDIT|READ|MANAGE|NO_PERMISSIONS) PERMISSION="$1"; shift ;; esac
  [ "${1:-}" = --port ] && PORT="$2"
  admin_call grant "$NAME" "$EXPERIMENT" "$PERMISSION"
  exit $?
fi

while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    --backend-uri) BACKEND=uri; shift ;;
    --auth) AUTH=1; shift ;;
    --default-permission) DEFAULT_PERMISSION="$2"; shift 2 ;;
    --allowed-hosts) ALLOWED_HOSTS="$2"; shift 2 ;;
    [0-9]*) PORT="$1"; shift ;;  # the old positional form: tracking_server.sh PORT
    *) die "unknown argument '$1' (a store URI is read from \$MLFLOW_BACKEND_STORE_URI with --backend-uri)" ;;
  esac
done
ALLOWED_HOSTS="${ALLOWED_HOSTS:-127.0.0.1:$PORT,localhost:$PORT}"
ARTIFACTS="${OPTBENCH_ARTIFACTS:-mlruns/artifacts}"
PIDS=()
PG_CTL=""

stop() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$PG_CTL" ]; then runuser -u postgres -- "$PG_CTL" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true; fi
  echo "tracking_server.sh: stopped" >&2
}
trap stop INT TERM EXIT

start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ]; then
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root: apt-get install postgresql"
    echo "tracking_server.sh: installing Debian's postgresql" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }; } ||
      die "apt-get install postgresql failed"
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  [ "$(id -u)" = 0 ] || die "--backend postgres runs PostgreSQL as the postgres user, which needs root"
  PG_CTL="$bin/pg_ctl"
  local root="${OPTBENCH_PG_DATA:-/tmp/optbench-postgres-$PORT}" pg_port="${OPTBENCH_PG_PORT:-$((PORT + 1))}"
  PG_DATA="$root/cluster"
  PG_PASSWORD_FILE="$root/password"
  mkdir -p "$root" && chown postgres:postgres "$root" && chmod 700 "$root"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$PG_PASSWORD_FILE"
    chown postgres "$PG_PASSWORD_FILE" && chmod 600 "$PG_PASSWORD_FILE"
    runuser -u postgres -- "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
      --pwfile="$PG_PASSWORD_FILE" >/dev/null
  fi
  runuser -u postgres -- "$PG_CTL" -D "$PG_DATA" -w -l "$root/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $PG_DATA" start >/dev/null
  runuser -u postgres -- "$bin/psql" -h "$PG_DATA" -p "$pg_port" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 ||
    runuser -u postgres -- "$bin/createdb" -h "$PG_DATA" -p "$pg_port" -U postgres mlflow
  export MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://postgres:$(cat "$PG_PASSWORD_FILE")@127.0.0.1:$pg_port/mlflow"
  echo "tracking_server.sh: PostgreSQL on 127.0.0.1:$pg_port, data in $PG_DATA" >&2
}

case "$BACKEND" in
  sqlite) SQLITE="${OPTBENCH_SQLITE:-mlruns/mlflow.db}"; mkdir -p "$(dirname "$SQLITE")"
          export MLFLOW_BACKEND_STORE_URI="sqlite:///$SQLITE" ;;
  postgres) start_postgres ;;
  uri) [ -n "${MLFLOW_BACKEND_STORE_URI:-}" ] || die "--backend-uri reads the store URI from \$MLFLOW_BACKEND_STORE_URI, which is empty" ;;
  *) die "unknown --backend '$BACKEND' (sqlite, postgres, or --backend-uri)" ;;
esac
case "$MLFLOW_BACKEND_STORE_URI" in
  sqlite:///*|postgresql://*|postgresql+*://*|mysql://*|mysql+*://*) ;;
  *) die "unsupported backend store URI scheme (use sqlite:///..., postgresql://... or mysql://...)" ;;
esac
mkdir -p "$ARTIFACTS"
APP=()
if [ "$AUTH" = 1 ]; then
  if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] && [ -n "${OPTBENCH_ADMIN_PASSWORD_FILE:-}" ]; then
    MLFLOW_AUTH_ADMIN_PASSWORD=$(cat "$OPTBENCH_ADMIN_PASSWORD_FILE")
  fi
  [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] ||
    die "--auth needs the admin password in \$MLFLOW_AUTH_ADMIN_PASSWORD or in the file \$OPTBENCH_ADMIN_PASSWORD_FILE"
  export MLFLOW_AUTH_ADMIN_PASSWORD
  # The session key of the login pages' CSRF protection: random per start unless given (several servers
  # behind one proxy must share it).
  export MLFLOW_FLASK_SERVER_SECRET_KEY="${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')}"
  AUTH_DIR=$(mktemp -d) && chmod 700 "$AUTH_DIR"
  cat > "$AUTH_DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = $DEFAULT_PERMISSION
database_uri = sqlite:///$(realpath "$ARTIFACTS")/../basic_auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
  export MLFLOW_AUTH_CONFIG_PATH="$AUTH_DIR/basic_auth.ini"
  APP=(--app-name basic-auth)
fi
[ "$HOST" = 127.0.0.1 ] || [ "$AUTH" = 1 ] ||
  echo "tracking_server.sh: WARNING: listening on $HOST without --auth: anyone who reaches it can write runs" >&2
echo "tracking_server.sh: MLflow on http://$HOST:$PORT (backend: $BACKEND, artifacts: $ARTIFACTS, auth: $AUTH)" >&2
# umask 077: the server's files (basic_auth.db holds password hashes) are readable by their owner only.
(umask 077 && MLFLOW_ARTIFACTS_DESTINATION="$ARTIFACTS" exec "$MLFLOW" server --host "$HOST" --port "$PORT" \
  --workers 1 --allowed-hosts "$ALLOWED_HOSTS" "${APP[@]}") >&2 &
PIDS+=($!)
for _ in $(seq 1 240); do
  if "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null; then
    echo "MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT"
    wait "${PIDS[0]}"
    exit $?
  fi
  kill -0 "${PIDS[0]}" 2>/dev/null || die "the MLflow server exited during start-up (see above)"
  sleep 0.5
done
die "the MLflow server did not answer on port $PORT within 120 s"
