"""The paper's Table 1 on the demo world: few-shot tuning against CLIP, with every figure's command.

    python benchmarks/fewshot_table.py --work runs/table [--seeds 0,1,2] [--scores discffusion,denoise,diffusion_itm]
        [--n-per-tag 200] [--epochs 1] [--deltas-on qkvo] [--out docs/results/tune/fewshot_table]

Protocol (issue 28): the few-shot file is 5% of the train split (`python -m training.world
export-fewshot`); the test split gives 200 items per tag (attribute, relation and shape swaps,
single objects). Columns: CLIP zero-shot; CLIP with its last layer tuned on the same lines
(`training.demo_models.clip_lastlayer`, the paper's "CLIP (fine-tuning)"); each diffusion score
zero-shot and tuned with `discff tune` (the recipe of training/demo_models/tune_demo_deltas.py).
Each seed changes the tuning seed (split, batches, noise), so the spread over seeds is the
spread of tuning itself; zero-shot columns do not depend on it. Tuned vs zero-shot and tuned vs
CLIP are paired item by item (gained, lost, exact McNemar p) on the first seed's run.

Everything is run through the product's own commands; the script only assembles their JSON.
Runs are kept in --work, so a second call reuses finished ones (resume after an interruption).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TAGS = ("attribute_swap", "relation_swap", "shape_swap", "single_object")
GRID = ["--steps", "5", "--levels", "0.5"]


def run(args: list[str], out: Path) -> dict:
    """Run one command once, its JSON stdout kept in `out` (reused when present)."""
    if not out.exists():
        print("$ " + " ".join(args), file=sys.stderr)
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
        out.write_text(result.stdout)
    return json.loads(out.read_text())


def prepare(work: Path, n_per_tag: int) -> tuple[Path, Path]:
    fewshot, ev = work / "fs" / "fewshot.jsonl", work / "ev"
    if not fewshot.exists():
        subprocess.run([sys.executable, "-m", "training.world", "export-fewshot", str(fewshot), "--fraction", "0.05"],
                       check=True)
    table = ev / "table.jsonl"
    if not table.exists():
        subprocess.run([sys.executable, "-m", "training.world", "export-eval", str(ev), "--n-per-tag", str(n_per_tag)],
                       check=True)
        table.write_text("".join((ev / f"{tag}.jsonl").read_text() for tag in TAGS))
    return fewshot, table


def accuracy(doc: dict, system: str) -> dict[str, float]:
    return {r["tag"]: r[system]["value"] for r in doc["rows"] if r["metric"] == "accuracy" and system in r}


def paired(doc: dict, pair: tuple[str, str]) -> dict[str, str]:
    out = {}
    for row in doc["rows"]:
        if row["metric"] != "accuracy":
            continue
        for p in row.get("paired", []):
            if tuple(p["systems"]) == pair:
                out[row["tag"]] = f"+{p['gained']} −{p['lost']}, p {p['p_value']:.2g}"
    return out


def main(argv: list[str] | None = None) -> None:
    from training.demo_models.tune_demo_deltas import RECIPE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scores", default="discffusion")
    parser.add_argument("--n-per-tag", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=int(RECIPE["--epochs"]))
    parser.add_argument("--out", type=Path, default=None, help="folder for table.md and table.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    scores = args.scores.split(",")
    fewshot, table = prepare(args.work, args.n_per_tag)
    discff = [sys.executable, "-m", "discff_cli"]

    columns: dict[str, list[dict[str, float]]] = {}
    pairs: dict[str, dict[str, str]] = {}
    clip = run(discff + ["eval", str(table), "--clip", "demo", "--no-diffusion", "--json"], args.work / "clip.json")
    columns["CLIP zero-shot"] = [accuracy(clip, "clip")]
    lastlayer = args.work / "clip_lastlayer"
    if not lastlayer.exists():
        subprocess.run([sys.executable, "-m", "training.demo_models.clip_lastlayer", str(fewshot), "--clip", "demo",
                        "--out", str(lastlayer)], check=True)
    ll = run(discff + ["eval", str(table), "--clip", str(lastlayer), "--no-diffusion", "--json"],
             args.work / "clip_lastlayer.json")
    columns["CLIP last layer tuned"] = [accuracy(ll, "clip")]
    for score in scores:
        for seed in seeds:
            deltas = args.work / f"{score}_seed{seed}.safetensors"
            recipe = dict(RECIPE, **{"--score": score, "--epochs": str(args.epochs)})
            tune = discff + ["tune", str(fewshot), "--model", "demo", "--seed", str(seed), "--out", str(deltas),
                             "--json"] + [x for kv in recipe.items() for x in kv]
            run(tune, args.work / f"tune_{score}_seed{seed}.json")
            doc = run(discff + ["eval", str(table), "--clip", "demo", "--model", "demo", "--score", score,
                                "--deltas", str(deltas), "--json"] + GRID,
                      args.work / f"eval_{score}_seed{seed}.json")
            if seed == seeds[0]:
                columns[f"{score} zero-shot"] = [accuracy(doc, score)]
                pairs[f"{score} tuned vs zero-shot"] = paired(doc, (score, f"{score}_tuned"))
                pairs[f"{score} tuned vs CLIP"] = paired(doc, ("clip", f"{score}_tuned"))
            columns.setdefault(f"{score} tuned", []).append(accuracy(doc, f"{score}_tuned"))
    write(columns, pairs, seeds, args.out or args.work)


def write(columns: dict[str, list[dict[str, float]]], pairs: dict[str, dict[str, str]], seeds: list[int],
          out: Path) -> None:
    def cell(runs: list[dict[str, float]], tag: str) -> str:
        values = [r[tag] for r in runs if tag in r]
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f} (n={len(values)})"

    tags = list(TAGS) + ["all"]
    lines = ["| tag | " + " | ".join(columns) + " | " + " | ".join(pairs) + " |",
             "|---" * (1 + len(columns) + len(pairs)) + "|"]
    for tag in tags:
        lines.append(f"| {tag} | " + " | ".join(cell(runs, tag) for runs in columns.values()) + " | "
                     + " | ".join(p.get(tag, "") for p in pairs.values()) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + f"\n\nseeds: {seeds}\n")
    (out / "table.json").write_text(json.dumps({"columns": columns, "paired": pairs, "seeds": seeds}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
