"""Optuna's samplers against a Frontier tabular benchmark, for `search_bench --peer`.

Each study asks for one block type (and block count, when the space lets it vary) per stage, the
encoding an Optuna user would write for this space; the genome is looked up in the table with the
same width rule and the same seed choice as Frontier's harness (the widest hidden size within the
latency budget; the run of seed `(hash prefix XOR search seed) mod seeds`), so both sides see the
same answers. A model seen before costs nothing; a run stops after `--max-evals` distinct models.

    python -m venv target/bench-venv && target/bench-venv/bin/pip install -r bench/search/requirements.txt
    target/bench-venv/bin/python bench/search/optuna_table.py \
        --table bench/tables/tiny-shakespeare.json.gz --seeds 30 --max-evals 100 \
        --out target/optuna-traces.jsonl

Writes one JSON line per (sampler, seed): {"sampler", "seed", "hashes": [...]} in evaluation order.
"""

import argparse
import gzip
import json
import sys

import optuna


def canon(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Table:
    def __init__(self, path, budget_ms):
        with gzip.open(path, "rt") as f:
            doc = json.load(f)
        if doc.get("format") != "frontier/table":
            sys.exit(f"{path}: not a frontier table")
        self.models = doc["models"]
        spec = doc["manifest"]["spec"]
        self.name = doc["manifest"]["name"]
        self.space = spec["space"]
        self.budget = budget_ms if budget_ms is not None else spec["target"].get("latency_budget_ms")
        self.by_genome = {}
        for g in doc["genomes"]:
            self.by_genome[(canon(g["genome"]), g["hidden_size"])] = self.models[g["model"]]
        stages = len(doc["genomes"][0]["genome"]["stages"])
        # The block types each stage takes, as the table lists them (every one the space allows).
        self.blocks = [
            sorted({canon(g["genome"]["stages"][i]["block"]) for g in doc["genomes"]}) for i in range(stages)
        ]
        self.widths = sorted(self.space["hidden_sizes"], reverse=True)

    def model_for(self, genome):
        """The paper's width rule: the widest model within the budget, else the narrowest."""
        key = canon(genome)
        last = None
        for h in self.widths:
            model = self.by_genome.get((key, h))
            if model is None:
                return None
            if self.budget is None or model["latency_ms"] <= self.budget:
                return model
            last = model
        return last

    def observed(self, model, seed):
        prefix = int(model["arch_hash"][:16], 16)
        runs = model["runs"]
        return runs[((prefix ^ seed) & 0xFFFFFFFFFFFFFFFF) % len(runs)]["ppl"]


def run_study(table, sampler_name, seed, max_evals):
    lo, hi = table.space["min_blocks_per_stage"], table.space["max_blocks_per_stage"]
    seen = {}
    order = []

    def objective(trial):
        stages = []
        for i, choices in enumerate(table.blocks):
            block = json.loads(trial.suggest_categorical(f"stage{i}", choices))
            blocks = trial.suggest_int(f"stage{i}_blocks", lo, hi) if hi > lo else lo
            stages.append({"block": block, "blocks": blocks})
        model = table.model_for({"stages": stages})
        if model is None:
            # Over the operator cap: not a genome of the space.
            raise optuna.TrialPruned()
        h = model["arch_hash"]
        if h not in seen:
            seen[h] = table.observed(model, seed)
            order.append(h)
        violation = model["latency_ms"] - table.budget if table.budget is not None else -1.0
        trial.set_user_attr("constraint", [violation])
        if sampler_name == "optuna-nsga2":
            return seen[h], model["latency_ms"]
        return seen[h]

    def constraints(trial):
        return trial.user_attrs["constraint"]

    if sampler_name == "optuna-tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
        study = optuna.create_study(direction="minimize", sampler=sampler)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=16, constraints_func=constraints)
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def stop(study, _trial):
        if len(order) >= max_evals:
            study.stop()

    study.optimize(objective, n_trials=max_evals * 20, callbacks=[stop])
    return order[:max_evals]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", required=True)
    p.add_argument("--budget-ms", type=float)
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--max-evals", type=int, default=100)
    p.add_argument("--samplers", default="optuna-tpe,optuna-nsga2")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = Table(args.table, args.budget_ms)
    with open(args.out, "w") as out:
        for name in args.samplers.split(","):
            if name not in ("optuna-tpe", "optuna-nsga2"):
                sys.exit(f"--samplers: unknown sampler {name!r} (optuna-tpe, optuna-nsga2)")
            for seed in range(args.seeds):
                hashes = run_study(table, name, seed, args.max_evals)
                out.write(json.dumps({"sampler": name, "seed": seed, "hashes": hashes}) + "\n")
                out.flush()
                print(f"{name} seed {seed}: {len(hashes)} models", file=sys.stderr)


if __name__ == "__main__":
    main()
