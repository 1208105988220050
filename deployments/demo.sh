#!/usr/bin/env bash
# `make demo`: a local Prefect server, the demo corpus, then `fvc run` of every stage against that
# server (the terminal shows live progress; the run, its subflows and artifacts are in the Prefect
# UI), then the deployments are served for more runs from the UI. Settings: deployments/demo.toml
# (FVC_CONFIG to change). `make down` (this script with "down") stops exactly the processes this
# script started (their pids are kept under $FVC_HOME/run).
set -euo pipefail
VENV=${VENV:-.venv}
BIN=$(cd "$VENV/bin" && pwd)
export FVC_HOME=${FVC_HOME:-$PWD/fvc-data}
export PREFECT_HOME="$FVC_HOME/prefect"
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:4200/api}
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=4200
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PREFECT_UI_ENABLED=true
export FVC_CORPUS_KIND=${FVC_CORPUS_KIND:-demo}
export FVC_CONFIG=${FVC_CONFIG:-$PWD/deployments/demo.toml}
RUN="$FVC_HOME/run"; LOGS="$FVC_HOME/logs"
mkdir -p "$RUN" "$LOGS" "$PREFECT_HOME"

stop() {  # stop what we started, newest first
  for name in serve server; do
    f="$RUN/$name.pid"
    if [[ -f $f ]]; then
      pid=$(cat "$f")
      if kill -0 "$pid" 2>/dev/null; then
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        echo "stopped $name (pid $pid)"
      fi
      rm -f "$f"
    fi
  done
}
if [[ ${1:-} == down ]]; then stop; exit 0; fi

healthy() { curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; }
started() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
t0=$(date +%s)

if ! healthy; then
  echo "starting the Prefect server on 127.0.0.1:4200 (log: $LOGS/prefect-server.log)"
  setsid "$BIN/prefect" server start --host 127.0.0.1 --port 4200 >"$LOGS/prefect-server.log" 2>&1 &
  echo $! >"$RUN/server.pid"
  for _ in $(seq 120); do healthy && break; sleep 1; done
  healthy || { echo "the Prefect server did not come up; see $LOGS/prefect-server.log"; exit 1; }
fi

echo "building the demo corpus"
"$BIN/fvc" demo-corpus "$FVC_HOME/demo-corpus"

echo "running every stage: fvc run (settings $FVC_CONFIG; library logs in $FVC_HOME/logs/fvc-run.log)"
"$BIN/fvc" run

# served after the run, so that it does not compete with it for the cores
if ! started serve; then
  echo "serving the deployments for runs from the UI (log: $LOGS/serve.log)"
  setsid "$BIN/python" deployments/serve.py >"$LOGS/serve.log" 2>&1 &
  echo $! >"$RUN/serve.pid"
fi
cat <<MSG

Done in $(( $(date +%s) - t0 )) s. What was produced, and where to look:
  work dir        $FVC_HOME  (index/, stage1..stage5/, mlflow.db)
  report          $FVC_HOME/stage5/report.html   (and $FVC_HOME/explore/explore.html: the corpus)
  Prefect UI      http://127.0.0.1:4200   (flow runs, task retries, stage artifacts)
  MLflow UI       $BIN/mlflow ui --backend-store-uri sqlite:///$FVC_HOME/mlflow.db --host 127.0.0.1
  SQL             $BIN/fvc sql --query leaderboard   |   $BIN/fvc sql "SELECT * FROM features LIMIT 5"
  predict         $BIN/fvc predict some_video.mp4
  stop servers    make down
MSG
