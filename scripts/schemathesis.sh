#!/usr/bin/env bash
# Fuzzes the coordinator's HTTP API against its own OpenAPI document with schemathesis.
#
# Starts `frontier serve` on a fresh SQLite database (and, with --postgres, again on a fresh
# Postgres database) with known tokens and a short lease TTL, fills it with a little data (a
# search, a worker, a finished trial, a latency entry) so reads return real rows, then runs every
# schemathesis check against /api/openapi.json: the admin token goes to admin operations and the
# worker token to worker operations (schemathesis.toml). Exits non-zero on any failure and prints
# the totals: requests sent, 5xx answers, response schema violations.
#
# Usage: scripts/schemathesis.sh [--postgres] [--max-examples N] [--seed N]
#   --postgres        also run against a fresh database at FRONTIER_TEST_POSTGRES_URL
#                     (default postgres://postgres@127.0.0.1:5432/postgres)
#   --max-examples N  generated cases per operation and phase (default 60)
#   --seed N          schemathesis' random seed (default: a fixed one, so runs are comparable)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

schemathesis_version="4.32.5"
postgres=false
max_examples=60
seed=20261130
while [ $# -gt 0 ]; do
    case "$1" in
        --postgres) postgres=true ;;
        --max-examples) max_examples="$2"; shift ;;
        --seed) seed="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/schemathesis-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
    echo "installing schemathesis $schemathesis_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

work="$(mktemp -d)"
cargo build --quiet -p frontier
# A private copy: another build in a shared target directory may replace the original.
cp "$target/debug/frontier" "$work/frontier"
frontier="$work/frontier"

server_pid=""
pg_database=""
export FRONTIER_ADMIN_TOKEN="schemathesis-admin-token"
export FRONTIER_WORKER_TOKEN="schemathesis-worker-token"
pg_admin_url="${FRONTIER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    if [ -n "$pg_database" ]; then
        psql -q "$pg_admin_url" -c "DROP DATABASE IF EXISTS $pg_database WITH (FORCE)" >/dev/null 2>&1 || true
        pg_database=""
    fi
}
cleanup() {
    stop_server
    if [ -n "${SCHEMATHESIS_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# api METHOD PATH TOKEN [BODY]: prints the response body, fails on a non-2xx answer.
api() {
    local method="$1" path="$2" token="$3" body="${4:-}"
    local args=(-sS --fail-with-body -X "$method" -H "authorization: Bearer $token")
    if [ -n "$body" ]; then
        args+=(-H "content-type: application/json" --data "$body")
    fi
    curl "${args[@]}" "$base$path"
}

json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# Some rows for the reads to return: a search whose first trial finished, a worker on a device
# with a latency entry.
seed_data() {
    local spec='{"name": "seeded", "model": "tiny",
        "space": {"mixers": ["attention", "mamba2", "deltanet"], "ratios": ["0:1", "1:1"],
                  "ffns_per_mixer": [0, 1], "stages": 3, "min_blocks_per_stage": 1,
                  "max_blocks_per_stage": 2, "max_operators": 6, "hidden_sizes": [64, 128]},
        "target": {"setting": "batch=1,prompt=16,gen=32"},
        "proxy": {"tokens": 4096, "seq_len": 32, "batch_size": 4, "corpus": "synthetic:selective_copying"},
        "algorithm": {"kind": "aging_evolution", "population": 4, "sample_size": 2, "per_cycle": 2, "cycles": 2},
        "seed": 3}'
    api POST /api/v1/searches "$FRONTIER_ADMIN_TOKEN" "$spec" >/dev/null
    api POST /api/v1/workers/register "$FRONTIER_WORKER_TOKEN" \
        '{"worker_id": "seed-worker", "hostname": "localhost", "device": {"fingerprint": "cpu-seed", "name": "cpu", "kind": "cpu"}}' >/dev/null
    api POST /api/v1/devices/cpu-seed/lut "$FRONTIER_WORKER_TOKEN" \
        '[{"setting_key": "batch=1,prompt=16,gen=32", "op_key": "ffn:hidden=64,intermediate=192", "median_ms": 0.1, "p10_ms": 0.09, "p90_ms": 0.11, "repeats": 5}]' >/dev/null
    local lease trial token
    lease="$(api POST /api/v1/workers/lease "$FRONTIER_WORKER_TOKEN" '{"worker_id": "seed-worker", "wait_ms": 0}')"
    trial="$(echo "$lease" | json_field trial_id)"
    token="$(echo "$lease" | json_field lease_token)"
    api POST "/api/v1/trials/$trial/heartbeat" "$FRONTIER_WORKER_TOKEN" \
        "{\"lease_token\": \"$token\", \"progress\": {\"step\": 1, \"steps\": 32, \"tokens\": 128, \"loss\": 5.5, \"tokens_per_s\": 1000.0}}" >/dev/null
    api POST "/api/v1/trials/$trial/complete" "$FRONTIER_WORKER_TOKEN" \
        "{\"lease_token\": \"$token\", \"metrics\": {\"outcome\": \"completed\", \"val_loss\": 2.5, \"ppl\": 12.182494,
          \"train_loss\": 2.4, \"steps\": 32, \"tokens\": 4096, \"tokens_per_s\": 1000.0, \"train_seconds\": 4.1,
          \"params\": 100000, \"loss_curve\": [[0, 5.5], [31, 2.4]], \"device\": \"cpu-seed\"}}" >/dev/null
}

# run_backend NAME DATABASE_URL: one server, one schemathesis run; appends to the totals.
failed=false
run_backend() {
    local name="$1" url="$2" port
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    "$frontier" serve --database-url "$url" --bind "127.0.0.1:$port" --lease-ttl-s 2 \
        >"$work/server-$name.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -sf "$base/readyz" >/dev/null 2>&1 && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$work/server-$name.log" >&2
            echo "error: the coordinator did not start" >&2
            exit 1
        fi
        sleep 0.2
    done
    curl -sf "$base/readyz" >/dev/null
    seed_data

    local report="$work/report-$name"
    local start=$SECONDS status=0
    echo "== schemathesis $schemathesis_version against $name at $base" >&2
    # From the scratch directory, where schemathesis keeps its own files. One worker: with several
    # threads, hypothesis parses lambda sources concurrently, which CPython 3.11's `ast.parse` does
    # not survive ("AST constructor recursion depth mismatch"), failing a run for no fault of the API.
    (cd "$work" && "$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" \
        run "$base/api/openapi.json" --checks all --max-examples "$max_examples" --seed "$seed" \
        --workers 1 --report har,ndjson --report-dir "$report" --no-color) || status=$?
    local elapsed=$((SECONDS - start))
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: the coordinator exited during the run" >&2
        status=1
    fi
    if grep -q "panicked" "$work/server-$name.log"; then
        grep -B2 -A8 "panicked" "$work/server-$name.log" >&2
        echo "error: the coordinator panicked" >&2
        status=1
    fi
    stop_server
    "$venv/bin/python" "$root/scripts/schemathesis_totals.py" "$name" "$report" "$elapsed" || status=1
    [ "$status" -eq 0 ] || failed=true
}

run_backend sqlite "sqlite://$work/frontier.db"
if $postgres; then
    pg_database="frontier_schemathesis_$$"
    psql -q "$pg_admin_url" -c "CREATE DATABASE $pg_database" >/dev/null
    run_backend postgres "${pg_admin_url%/*}/$pg_database"
fi

if $failed; then
    echo "schemathesis: FAILED" >&2
    exit 1
fi
echo "schemathesis: passed"
