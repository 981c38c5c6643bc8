#!/usr/bin/env bash
# Checks the deployment recipes without a container engine, a cluster or a GPU:
#
#   docker-compose.yml   `docker-compose config` (Debian's docker-compose 1.29, installed when
#                        missing; also `docker compose` v2 when the docker client has it), with and
#                        without the gpu profile; each required variable left unset must fail it;
#                        every build argument it passes is declared in the Dockerfile
#   Dockerfile           the dependency layer: the manifests it copies, with the stubs
#                        deploy/docker/stub-workspace.sh writes, load as the same workspace
#   deploy/k8s           every manifest against the Kubernetes schemas in strict mode
#                        (kubernetes-validate in a virtualenv under target/), the kustomization
#                        lists every manifest, and its rendering (kubectl kustomize, when kubectl is
#                        installed) validates too
#   deploy/slurm         bash -n and shellcheck, then runs with a stand-in frontier binary: one
#                        worker per GPU with its own CUDA_VISIBLE_DEVICES, `--device cuda:0` and
#                        id, SIGTERM passed on and waited for, a clear failure without its variables
#
# Usage: scripts/deploy-check.sh     (from any directory; installs with apt-get when root)
# Exits non-zero, naming the check, on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# kubernetes-validate, pinned, and the Kubernetes version whose schemas the manifests must meet.
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=1.32.0

started=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "deploy-check: FAILED: $*" >&2
    exit 1
}
ok() {
    echo "deploy-check: ok: $*"
}

# --- tools ------------------------------------------------------------------------------------

missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if ((${#missing[@]} > 0)); then
    [[ "$(id -u)" == 0 ]] || fail "${missing[*]} not installed, and installing needs root: apt-get install ${missing[*]}"
    echo "deploy-check: installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || fail "apt-get update failed"
    # Without recommends: docker-compose recommends a container engine, which nothing here runs.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "apt-get install ${missing[*]} failed"
fi
command -v python3 >/dev/null || fail "python3 is needed for kubernetes-validate"
command -v cargo >/dev/null || fail "cargo is needed to load the Dockerfile's stub workspace"

venv="$root/target/deploy-check-venv"
installed="$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)"
if [[ "$installed" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
    echo "deploy-check: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION in $venv"
    python3 -m venv "$venv" || fail "python3 -m venv $venv failed"
    "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ||
        fail "cannot install kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
fi
py="$venv/bin/python"

# --- docker-compose.yml -----------------------------------------------------------------------

required=(FRONTIER_ADMIN_TOKEN FRONTIER_WORKER_TOKEN POSTGRES_PASSWORD)
dummy=(FRONTIER_ADMIN_TOKEN=check-admin-token FRONTIER_WORKER_TOKEN=check-worker-token POSTGRES_PASSWORD=check-password)
# An empty env file, so a `.env` beside the compose file cannot stand in for the variables.
: >"$tmp/empty.env"
unset_required=()
for name in "${required[@]}"; do
    unset_required+=(-u "$name")
done

compose_check() { # LABEL COMMAND...
    local label="$1"
    shift
    local compose=("$@" --env-file "$tmp/empty.env" -f docker-compose.yml)
    env "${unset_required[@]}" "${dummy[@]}" "${compose[@]}" config -q ||
        fail "$label config rejects docker-compose.yml"
    env "${unset_required[@]}" "${dummy[@]}" "${compose[@]}" --profile gpu config -q ||
        fail "$label --profile gpu config rejects docker-compose.yml"
    local name others
    for name in "${required[@]}"; do
        others=()
        for assignment in "${dummy[@]}"; do
            [[ "$assignment" == "$name="* ]] || others+=("$assignment")
        done
        if env "${unset_required[@]}" "${others[@]}" "${compose[@]}" config -q >/dev/null 2>"$tmp/err"; then
            fail "$label config accepts docker-compose.yml with $name unset"
        fi
        grep -q "set $name" "$tmp/err" || fail "$label config with $name unset does not say to set it: $(cat "$tmp/err")"
    done
    ok "docker-compose.yml ($label $("$@" version --short 2>/dev/null || true); default and gpu profiles; ${required[*]} required)"
}
compose_check docker-compose docker-compose
if docker compose version >/dev/null 2>&1; then
    compose_check "docker compose" docker compose
else
    echo "deploy-check: note: no 'docker compose' (v2 plugin) here; checked with docker-compose only"
fi

env "${unset_required[@]}" "${dummy[@]}" docker-compose --env-file "$tmp/empty.env" -f docker-compose.yml \
    --profile gpu config >"$tmp/compose.yml"
"$py" - "$tmp/compose.yml" Dockerfile <<'EOF' || fail "docker-compose.yml passes build arguments the Dockerfile does not declare"
import re, sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
declared = set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", open(sys.argv[2]).read(), re.M))
bad = []
for name, service in config["services"].items():
    build = service.get("build")
    if isinstance(build, dict):
        bad += [f"{name}: {arg}" for arg in build.get("args", {}) if arg not in declared]
if bad:
    print("undeclared build arguments:", ", ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
ok "docker-compose.yml build arguments are declared in the Dockerfile"

# --- Dockerfile -------------------------------------------------------------------------------

# Copy what the dependency layer copies (the COPY lines naming Cargo.toml or Cargo.lock before the
# sources), write the stubs as the image does, and load the result as a workspace.
stub="$tmp/stub-workspace"
mkdir -p "$stub"
copies=0
while read -r -a words; do
    ((${#words[@]} >= 3)) || continue
    dest="${words[-1]}"
    for src in "${words[@]:1:${#words[@]}-2}"; do
        case "$src" in
            Cargo.toml | Cargo.lock | */Cargo.toml) ;;
            *) continue ;;
        esac
        [[ -f "$src" ]] || fail "Dockerfile copies $src, which does not exist"
        target="$dest"
        [[ "$target" == */ ]] && target="$target$(basename "$src")"
        mkdir -p "$(dirname "$stub/$target")"
        cp "$src" "$stub/$target"
        copies=$((copies + 1))
    done
done < <(sed -n '/^FROM .* AS builder/,/^COPY \. \./p' Dockerfile | grep '^COPY ')
((copies > 0)) || fail "found no manifest COPY lines in the Dockerfile's builder stage"
(cd "$stub" && sh "$root/deploy/docker/stub-workspace.sh") || fail "deploy/docker/stub-workspace.sh failed on the manifests the Dockerfile copies"
members() {
    cargo metadata --no-deps --offline --format-version 1 --manifest-path "$1" |
        "$py" -c 'import json, sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin)["packages"])))'
}
want="$(members Cargo.toml)" || fail "cargo metadata failed on the workspace"
got="$(members "$stub/Cargo.toml")" || fail "the Dockerfile's stub workspace does not load (cargo metadata failed above)"
[[ "$got" == "$want" ]] || fail "the Dockerfile's stub workspace has packages [$got], the workspace [$want]: copy every member's Cargo.toml"
ok "Dockerfile dependency layer: $copies manifests copied, stub workspace loads with packages [$got]"

# --- deploy/k8s -------------------------------------------------------------------------------

manifests=()
for file in deploy/k8s/*.yaml deploy/k8s/*.yml; do
    [[ -e "$file" ]] || continue
    [[ "$(basename "$file")" == kustomization.yaml ]] && continue
    manifests+=("$file")
done
((${#manifests[@]} > 0)) || fail "no manifests in deploy/k8s"

k8s_validate() { # LABEL FILE...
    local label="$1"
    shift
    if ! "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "$@" >"$tmp/kv" 2>&1; then
        cat "$tmp/kv" >&2
        fail "$label do not validate against Kubernetes $KUBERNETES_VERSION (strict)"
    fi
    # An unknown kind is only a warning there; every object here must have a schema.
    if grep -q . "$tmp/kv"; then
        cat "$tmp/kv" >&2
        fail "kubernetes-validate warned about $label"
    fi
}
k8s_validate "deploy/k8s manifests" "${manifests[@]}"
ok "deploy/k8s: ${#manifests[@]} manifests valid against Kubernetes $KUBERNETES_VERSION (strict, kubernetes-validate $KUBERNETES_VALIDATE_VERSION)"

"$py" - deploy/k8s <<'EOF' || fail "deploy/k8s/kustomization.yaml does not list exactly the manifests in deploy/k8s"
import os, sys, yaml
folder = sys.argv[1]
listed = yaml.safe_load(open(os.path.join(folder, "kustomization.yaml"))).get("resources") or []
present = sorted(f for f in os.listdir(folder) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
missing = [f for f in listed if not os.path.isfile(os.path.join(folder, f))]
unlisted = [f for f in present if f not in listed]
for f in missing:
    print(f"kustomization.yaml lists {f}, which does not exist", file=sys.stderr)
for f in unlisted:
    print(f"kustomization.yaml does not list {f}", file=sys.stderr)
sys.exit(1 if missing or unlisted else 0)
EOF
ok "deploy/k8s/kustomization.yaml lists every manifest"

if command -v kubectl >/dev/null; then
    kubectl kustomize deploy/k8s >"$tmp/rendered.yaml" || fail "kubectl kustomize deploy/k8s failed"
    k8s_validate "the rendered kustomization" "$tmp/rendered.yaml"
    ok "deploy/k8s renders with kubectl kustomize and the result validates"
else
    echo "deploy-check: note: no kubectl here; the kustomization was not rendered"
fi

# --- deploy/slurm -----------------------------------------------------------------------------

sbatch_script=deploy/slurm/frontier-workers.sbatch
bash -n "$sbatch_script" || fail "$sbatch_script has a syntax error"
shellcheck "$sbatch_script" deploy/docker/stub-workspace.sh scripts/deploy-check.sh ||
    fail "shellcheck found problems"
ok "bash -n and shellcheck: $sbatch_script, deploy/docker/stub-workspace.sh, scripts/deploy-check.sh"

# A stand-in for `frontier`: records its GPU, arguments and id, runs until SIGTERM, then takes a
# moment (a trial finishing) before it exits.
standin="$tmp/slurm"
mkdir -p "$standin/bin"
cat >"$standin/bin/frontier" <<'EOF'
#!/usr/bin/env bash
record="$STANDIN_RECORDS/$FRONTIER_WORKER_ID"
printf 'gpu=%s\nargs=%s\ntoken=%s\n' "$CUDA_VISIBLE_DEVICES" "$*" "$FRONTIER_WORKER_TOKEN" >"$record.started"
trap 'sleep 0.5; touch "$record.stopped"; exit 0' TERM
# At most 30 s, so that nothing outlives a failed check.
for _ in $(seq 300); do sleep 0.1; done
EOF
chmod +x "$standin/bin/frontier"
host="$(hostname -s)"

# Runs the batch script as Slurm would with the given environment, sends it SIGTERM once every
# worker has started, and checks what each worker saw. Args: JOB_ID EXPECTED ENV..., EXPECTED
# being each worker's GPUs, workers separated by `;` (`0;2;5`, or `0,1;2,3` for two GPUs each).
slurm_run() {
    local job="$1" expected="$2"
    shift 2
    local records="$standin/records-$job"
    mkdir -p "$records"
    env -u CUDA_VISIBLE_DEVICES -u SLURM_GPUS_ON_NODE -u SLURM_JOB_NUM_NODES \
        STANDIN_RECORDS="$records" SLURM_JOB_ID="$job" FRONTIER_BIN="$standin/bin/frontier" \
        FRONTIER_COORDINATOR=http://coordinator.test:8080 FRONTIER_WORKER_TOKEN=check-worker-token \
        FRONTIER_LOG_DIR="$standin/logs" FRONTIER_CACHE_DIR="$standin/cache" "$@" \
        bash "$sbatch_script" >"$standin/out-$job" 2>&1 &
    local pid=$!
    local gpus
    IFS=';' read -r -a gpus <<<"$expected"
    local waited=0
    while (($(find "$records" -name '*.started' | wc -l) < ${#gpus[@]})); do
        sleep 0.1
        waited=$((waited + 1))
        if ((waited >= 100)); then
            pkill -KILL -P "$pid" || true
            kill -KILL "$pid" 2>/dev/null || true
            cat "$standin/out-$job" >&2
            fail "$sbatch_script did not start ${#gpus[@]} workers within 10 s"
        fi
    done
    kill -TERM "$pid"
    waited=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        waited=$((waited + 1))
        if ((waited >= 100)); then
            pkill -KILL -P "$pid" || true
            kill -KILL "$pid" || true
            cat "$standin/out-$job" >&2
            fail "$sbatch_script was still running 10 s after SIGTERM (did its workers get it?)"
        fi
    done
    local rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || { cat "$standin/out-$job" >&2; fail "$sbatch_script exited with status $rc after SIGTERM"; }
    local n id devices
    for n in "${!gpus[@]}"; do
        if [[ "${gpus[$n]}" == *,* ]]; then
            id="$host-$job-gpus$n"
            devices="cuda:$(seq -s, 0 $(($(tr -cd , <<<"${gpus[$n]}" | wc -c))))"
        else
            id="$host-$job-gpu$n"
            devices=cuda:0
        fi
        [[ -f "$records/$id.started" ]] || fail "no worker $id (job $job)"
        # Checked the moment the script has exited: it must have waited for the worker.
        [[ -f "$records/$id.stopped" ]] || fail "$sbatch_script exited before worker $id finished after SIGTERM"
        grep -qx "gpu=${gpus[$n]}" "$records/$id.started" || fail "worker $id did not get CUDA_VISIBLE_DEVICES=${gpus[$n]}"
        grep -qx "args=worker --coordinator http://coordinator.test:8080 --device $devices" "$records/$id.started" ||
            fail "worker $id got other arguments: $(grep args= "$records/$id.started")"
        grep -qx "token=check-worker-token" "$records/$id.started" || fail "worker $id did not get FRONTIER_WORKER_TOKEN"
        [[ -f "$standin/logs/$id.log" ]] || fail "no log $standin/logs/$id.log for worker $id"
    done
    local started
    started="$(find "$records" -name '*.started' | wc -l)"
    ((started == ${#gpus[@]})) || fail "$sbatch_script started $started workers, not ${#gpus[@]}"
}
slurm_run 101 '0;2;5' CUDA_VISIBLE_DEVICES=0,2,5
slurm_run 102 '0;1' SLURM_GPUS_ON_NODE=2
slurm_run 103 '0,2;5,7' CUDA_VISIBLE_DEVICES=0,2,5,7 FRONTIER_GPUS_PER_WORKER=2
slurm_run 104 '0,1,2,3' SLURM_GPUS_ON_NODE=4 FRONTIER_GPUS_PER_WORKER=4

slurm_refuses() { # WHAT MESSAGE ENV...
    local what="$1" message="$2"
    shift 2
    if env -u CUDA_VISIBLE_DEVICES -u SLURM_GPUS_ON_NODE -u SLURM_JOB_NUM_NODES -u FRONTIER_COORDINATOR \
        -u FRONTIER_WORKER_TOKEN FRONTIER_BIN="$standin/bin/frontier" FRONTIER_LOG_DIR="$standin/logs" "$@" \
        bash "$sbatch_script" >"$standin/refused" 2>&1; then
        fail "$sbatch_script ran $what"
    fi
    grep -q "$message" "$standin/refused" || fail "$sbatch_script $what, but did not say '$message': $(cat "$standin/refused")"
}
slurm_refuses "without FRONTIER_COORDINATOR" "FRONTIER_COORDINATOR is not set" \
    FRONTIER_WORKER_TOKEN=t CUDA_VISIBLE_DEVICES=0
slurm_refuses "without FRONTIER_WORKER_TOKEN" "FRONTIER_WORKER_TOKEN is not set" \
    FRONTIER_COORDINATOR=http://c:8080 CUDA_VISIBLE_DEVICES=0
slurm_refuses "without GPUs" "no GPU in this allocation" \
    FRONTIER_COORDINATOR=http://c:8080 FRONTIER_WORKER_TOKEN=t
slurm_refuses "on two nodes" "runs the workers of one node" \
    FRONTIER_COORDINATOR=http://c:8080 FRONTIER_WORKER_TOKEN=t CUDA_VISIBLE_DEVICES=0 SLURM_JOB_NUM_NODES=2
slurm_refuses "with a group size that does not divide the GPUs" "does not divide this node's 3 GPUs" \
    FRONTIER_COORDINATOR=http://c:8080 FRONTIER_WORKER_TOKEN=t CUDA_VISIBLE_DEVICES=0,1,2 FRONTIER_GPUS_PER_WORKER=2
ok "$sbatch_script: one worker per GPU or per group of GPUs (CUDA_VISIBLE_DEVICES list and SLURM_GPUS_ON_NODE), SIGTERM passed on and waited for, clear refusals"

echo "deploy-check: all checks passed in $((SECONDS - started)) s"
