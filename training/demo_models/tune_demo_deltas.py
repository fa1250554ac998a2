"""The tuned deltas `discff demo` ships: `discff tune` itself on 5% of the demo world's train split.

    python -m training.demo_models.tune_demo_deltas [--work DIR] [--out FILE] [--seed 0] [--epochs N]

An interrupted run is continued by running the same command again (`discff tune --resume`).

Nothing here is a second tuning loop: the few-shot file is `python -m training.world export-fewshot`
(the first 5% of the train split, 1,000 lines, each listing its swaps before its replaced
attributes) and the deltas are whatever `discff tune` writes for it, run through the CLI's own
entry point with the recipe below. Only the train split is read, so the val and test splits (and
the gallery `discff demo` draws from the test split) stay unseen. The file records the bundled
model's fingerprint, so it is refused by any other model. The run's curve goes to
docs/results/tune/demo_deltas/ (a measurement record, not package data).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "discff_cli" / "assets" / "demo" / "tuned" / "discffusion.safetensors"
RECORD = REPO / "docs" / "results" / "tune" / "demo_deltas"
FRACTION = 0.05

# The recipe, chosen on the val split (docs/results/tune/demo_deltas/README.md says how).
RECIPE = {
    "--score": "discffusion",
    "--steps": "5",
    "--levels": "0.5",
    "--epochs": "1",
    "--batch-size": "16",
    "--lr": "1e-3",
    "--margin": "0.2",
    "--hard-negatives": "3",
    "--negatives-per-line": "1",
    "--val-fraction": "0.05",
    "--deltas-on": "qkvo",
}


def tune_command(fewshot: Path, out: Path, seed: int, epochs: int | None) -> list[str]:
    """The `discff tune` arguments of the shipped deltas."""
    recipe = dict(RECIPE, **({"--epochs": str(epochs)} if epochs else {}))
    args = ["tune", str(fewshot), "--model", "demo", "--seed", str(seed), "--out", str(out), "--json"]
    for flag, value in recipe.items():
        args += [flag, value]
    return args


def main(argv: list[str] | None = None) -> None:
    from discff_cli.cli import app
    from training.world.export import export_fewshot

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("tune-demo-work"), help="where the few-shot file is written")
    parser.add_argument("--out", type=Path, default=SHIPPED, help="the deltas file (default: the shipped one)")
    parser.add_argument("--record", type=Path, default=RECORD, help="folder for the run's JSON summary")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    args = parser.parse_args(argv)

    fewshot = args.work / "fewshot.jsonl"
    if not fewshot.exists():
        print(f"writing the few-shot file: {export_fewshot(fewshot, FRACTION, seed=0)} lines", file=sys.stderr)
    out = args.work / f"deltas_seed{args.seed}.safetensors"
    command = tune_command(fewshot, out, args.seed, args.epochs)
    if out.with_name(out.name + ".resume.pt").exists():  # an interrupted run continues where it stopped
        command.append("--resume")
    print("discff " + " ".join(command), file=sys.stderr)
    started = time.time()
    summary_file = args.work / f"tune_seed{args.seed}.json"
    with open(summary_file, "w") as stdout:
        old, sys.stdout = sys.stdout, stdout
        try:
            app.main(command, standalone_mode=False)
        finally:
            sys.stdout = old
    summary = json.loads(summary_file.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out, args.out)
    args.record.mkdir(parents=True, exist_ok=True)
    record = {"command": "discff " + " ".join(command), "wall_s": round(time.time() - started, 1), **summary}
    (args.record / f"tune_seed{args.seed}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); best epoch {summary['best_epoch']}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
