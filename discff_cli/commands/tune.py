"""`discff tune PAIRS_JSONL`: learn prompt deltas from a few examples (paper §4.5)."""

from __future__ import annotations

from typing import Any

import click

from discff_cli.errors import DiscffError
from discff_cli.options import engine_options, finite, json_option, pop_engine_config
from discff_cli.render.output import print_json, print_table

DEFAULT_TRIPLETS_PER_STEP = 8


@click.command()
@click.argument("pairs_jsonl")
@engine_options(batch_help=f"Triplets per optimisation step; 0 = {DEFAULT_TRIPLETS_PER_STEP}.")
@click.option("--out", default="deltas.safetensors", show_default=True, type=click.Path(dir_okay=False),
              help="Where the deltas and head weights are written.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="Rank of each delta (B·A); 0 = full rank, the paper's default.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.2, show_default=True, callback=finite(),
              help="M of the triplet loss, in units of the score's zero-shot spread of f(pos) - f(neg) (measured "
                   "before the first step, per timestep), so it means the same for every --score.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, callback=finite())
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-2, show_default=True, callback=finite())
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              callback=finite(),
              help="Share of lines held out and scored every epoch; the best epoch's deltas are kept.")
@click.option("--hard-negatives", type=click.IntRange(min=0), default=3, show_default=True,
              help="A line's first N stated negatives, trained every epoch (list each line's negatives hardest "
                   "first).")
@click.option("--negatives-per-line", type=click.IntRange(min=0), default=1, show_default=True,
              help="Further triplets drawn at random per line and epoch from the line's other negatives; 0 = all.")
@click.option("--head-weighting/--no-head-weighting", default=True, show_default=True,
              help="Dynamic attention-head weighting (paper Eq. 7).")
@click.option("--deltas-on", type=click.Choice(["kv", "qkvo"]), default="kv", show_default=True,
              help="Which cross-attention projections get deltas: kv = key and value (the paper's p^k, p^v); "
                   "qkvo adds the query and output projections (beyond the paper: image-side capacity).")
@click.option("--prompt-deltas/--no-prompt-deltas", default=True, show_default=True,
              help="Learn prompt deltas; --no-prompt-deltas with --timestep-weights learns the weights alone.")
@click.option("--timestep-weights", is_flag=True,
              help="Also learn one weight per (timestep, level) condition of the grid (Jeong et al. 2025), fitted "
                   "after the deltas and stored in the same file.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from the checkpoint next to --out.")
@json_option
def tune(pairs_jsonl: str, model: str, out: str, resume: bool, as_json: bool, **options: Any) -> None:
    """Tune prompt deltas on PAIRS_JSONL, few-shot image/text pairs with negatives (paper §4.5).

    Lines: {"image", "text", "label": 0|1}, {"image", "text", "negative_images": [...]} or
    {"image", "text", "negative_texts": [...]}, image paths relative to the file. Here --batch-size
    is the number of triplets per optimisation step (0 = 8); --seed seeds the noise, the split
    and the batches. Use the result with `discff score/search/eval --deltas FILE`.
    """
    from training.tune import TuneConfig

    if options["prune"]:
        raise DiscffError("--prune ranks one query's candidates and tuning compares each positive pair with one "
                          "negative on the full grid, so it does not apply to tune; use it with search or eval.")
    triplets_per_step = options.pop("batch_size") or DEFAULT_TRIPLETS_PER_STEP
    tune_keys = ("epochs", "rank", "margin", "lr", "weight_decay", "val_fraction", "negatives_per_line",
                 "hard_negatives", "head_weighting", "prompt_deltas", "timestep_weights", "deltas_on")
    if not options["prompt_deltas"] and not options["timestep_weights"]:
        raise DiscffError("--no-prompt-deltas leaves nothing to learn; add --timestep-weights.")
    config = TuneConfig(batch_size=triplets_per_step, seed=options["seed"], **{k: options.pop(k) for k in tune_keys})
    engine = pop_engine_config({**options, "batch_size": 0})
    result = run_tune(pairs_jsonl, model, engine, config, out, resume, progress=True)  # stderr: --json stays clean
    summary = _summary(result, model, pairs_jsonl)
    if result.best_epoch == 0 and not result.interrupted:
        summary["note"] = untrained_note(result, out)
        click.echo(f"note: {summary['note']}", err=True)
    if as_json:
        print_json(summary)
    else:
        _print_curve(summary)
    if result.interrupted:
        click.echo("Interrupted; run the same command with --resume to continue.", err=True)
        raise SystemExit(130)


def run_tune(pairs_jsonl: str, model: str, engine: Any, config: Any, out: str, resume: bool, progress: bool) -> Any:
    from discff_cli.engine.scorer import load_scorer
    from training.tune import Tuner, prepare_for_training
    from training.tune.data import tuning_split

    # bad lines and unusable files fail before any model is loaded
    split = tuning_split(pairs_jsonl, config.val_fraction, config.seed, config.negatives_per_line,
                         config.hard_negatives)
    if not split.val_triplets:
        click.echo(f"note: no validation triplets ({len(split.examples)} lines in {pairs_jsonl}, --val-fraction "
                   f"{config.val_fraction} holds none out): no epoch is chosen as best; the last epoch's deltas are "
                   "written.", err=True)
    _check_out(out)
    scorer = load_scorer(model, engine)
    prepare_for_training(scorer)
    tuner = Tuner(scorer, pairs_jsonl, out, config, split)
    if resume:
        tuner.load_checkpoint()
    try:
        if not progress:
            return tuner.run()
        with _Progress(tuner) as bar:
            return tuner.run(progress=bar.update)
    except OSError as exc:  # the disk filled up or became read-only while tuning
        from index.fs import write_failure

        raise DiscffError(str(write_failure(exc, out, "the last checkpoint is kept: fix that and run the same "
                                                      "command with --resume."))) from None


def _check_out(out: str) -> None:
    """Refuse an unwritable --out before the model loads (and before minutes of tuning)."""
    from pathlib import Path

    from index.fs import WriteFailed, check_writable

    if Path(out).is_dir():
        raise DiscffError(f"--out '{out}' is a folder; name the .safetensors file to write.")
    try:
        check_writable(Path(out).absolute().parent)
    except WriteFailed as exc:
        raise DiscffError(str(exc)) from None


class _Progress:
    """The tuning bar on stderr (render/progress.py): steps over all epochs, last loss, last validation accuracy."""

    def __init__(self, tuner: Any) -> None:
        from discff_cli.render.progress import progress_bar

        per_epoch = len(tuner.epoch_batches(0))
        self.bar_context = progress_bar("tuning", per_epoch * tuner.config.epochs, unit="steps", elapsed=True,
                                        transient=False, completed=tuner.state.epoch * per_epoch + tuner.state.step)
        self.loss, self.acc, self.epochs = "-", "-", tuner.config.epochs
        self.epoch = tuner.state.epoch + 1

    def __enter__(self) -> "_Progress":
        self.bar = self.bar_context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar_context.__exit__(*exc)

    def update(self, info: dict) -> None:
        phase = info["phase"]
        if phase == "step":
            self.loss, self.epoch = f"{info['loss']:.4f}", info["epoch"]
            self.bar.advance()
        elif phase == "epoch" and info.get("val_accuracy") is not None:
            self.acc = f"{100 * info['val_accuracy']:.1f}%"
        what = "validating" if phase == "validate" else "epoch"
        self.bar.describe(f"{what} {self.epoch}/{self.epochs}  loss {self.loss}  val acc {self.acc}")


def untrained_note(result: Any, out: str) -> str:
    """Why the written deltas are epoch 0's (zero) and what to do: said, never left silent."""
    return (f"no epoch beat the untrained deltas on the {result.n_val_triplets} validation triplet(s), so '{out}' "
            "holds epoch 0: zero deltas, which score exactly as the base model does. Give more lines, a larger "
            "--val-fraction or more --epochs.")


def _summary(result: Any, model: str, pairs_jsonl: str) -> dict:
    return {"out": str(result.out), "model": model, "train_file": pairs_jsonl, "interrupted": result.interrupted,
            "train_triplets": result.n_train_triplets, "val_triplets": result.n_val_triplets,
            "best_epoch": result.best_epoch, "curve": result.curve, "timestep_weights": result.timestep_weights,
            "wall_s": round(result.wall_s, 2)}


def _print_curve(summary: dict) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    rows = [(p["epoch"], num(p["train_loss"]), pct(p["val_accuracy"]), num(p["val_loss"]),
             "best" if p["epoch"] == summary["best_epoch"] else "") for p in summary["curve"]]
    title = f"discff tune -> {summary['out']}" if not summary["interrupted"] else "discff tune (interrupted)"
    print_table(title, ["epoch", "train loss", "val acc", "val loss", ""], rows, ["right"] * 4 + ["left"])
    weights = summary.get("timestep_weights")
    if weights:
        _print_weights(weights)


def _print_weights(report: dict) -> None:
    """The learned (timestep, level) weights and the accuracy they change, one row per condition."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    rows = [(t, f"{s:g}", f"{w:.3f}") for (t, s), w in zip(report["grid"], report["weights"])]
    title = (f"timestep weights: train acc {pct(report['train_accuracy_uniform'])} -> "
             f"{pct(report['train_accuracy_learned'])}, val acc {pct(report['val_accuracy_uniform'])} -> "
             f"{pct(report['val_accuracy_learned'])}")
    print_table(title, ["timestep", "level", "weight"], rows, ["right"] * 3)
