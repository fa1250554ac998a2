"""`discff eval FILE.jsonl`: CLIP and Discffusion side by side on labelled matching tasks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import click

from discff_cli.evaluation.datasets import benchmark_options, check_benchmark_options, load_benchmark
from discff_cli.clip_resolve import DEFAULT_CLIP, load_clip_cli
from discff_cli.engine.config import DEFAULT_MODEL
from discff_cli.errors import DiscffError
from discff_cli.evaluation.items import first_per_tag
from discff_cli.options import deltas_option, engine_options, json_option, pop_engine_config
from discff_cli.render.output import print_json, print_table

TUNED = "_tuned"


def system_label(system: str) -> str:
    """Column title: CLIP, or the score family (with 'tuned' for the --deltas column)."""
    if system == "clip":
        return "CLIP"
    return system[:-len(TUNED)] + " tuned" if system.endswith(TUNED) else system


def run_clip(spec: str, device: str, table, items, progress: bool) -> tuple[list, dict]:
    from discff_cli.evaluation import evaluate as ev

    clip = load_clip_cli(spec, device)
    start = time.perf_counter()
    scores = ev.clip_pair_scores(clip, table, progress=progress)
    info = {"model": spec, "fingerprint": clip.fingerprint, "seconds": round(time.perf_counter() - start, 2)}
    return ev.outcomes_for(items, table, scores), info


def run_diffusion(model: str, config, scores: tuple[str, ...], deltas: str | None, zero_shot: bool, table, items,
                  progress: bool) -> tuple[dict, dict]:
    """One column per score family, zero-shot and/or tuned, from one loaded model.

    Every family is read from the same U-Net passes (engine/scores.py), so the columns differ
    only by how those outputs are read; the deltas go on after the zero-shot passes, so the tuned
    columns share latents, text states and noise and differ only by the deltas (or timestep weights)."""
    from discff_cli.engine.deltas import apply_deltas, read_compatible_deltas
    from discff_cli.engine.scorer import load_scorer

    scorer = load_scorer(model, config)
    if deltas:  # a file for another model fails now, not after the zero-shot pass
        tensors, meta = read_compatible_deltas(scorer, deltas)
    outcomes, systems = {}, {}
    if zero_shot:
        _score_families(scorer, model, config, scores, None, "", table, items, progress, outcomes, systems)
    if deltas:
        apply_deltas(scorer, tensors, meta)
        _score_families(scorer, model, config, scores, deltas, TUNED, table, items, progress, outcomes, systems)
    return outcomes, systems


def _score_families(scorer, model: str, config, scores: tuple[str, ...], deltas: str | None, suffix: str, table,
                    items, progress: bool, outcomes: dict, systems: dict) -> None:
    """Fill `outcomes`/`systems` for each score through the one rank path (evaluation.diffusion_outcomes).

    A weights-only deltas file changes no U-Net output, but its column is still read through that
    path (the empty-prompt readings are cached; the conditional passes run again), so `--prune` and
    the pass count mean the same in every column."""
    from discff_cli.evaluation import evaluate as ev

    start = time.perf_counter()
    per_family, cost = ev.diffusion_outcomes(scorer, items, table, scores, progress=progress)
    info = {"model": model, "fingerprint": scorer.parts.fingerprint, "deltas": deltas, "config": config.to_dict(),
            "unet_passes": cost["unet_passes"], "empty_prompt_passes": cost["empty_prompt_passes"],
            "full_grid_passes": cost["full_grid_passes"], "prune": config.prune,
            "passes_shared_by": [s + suffix for s in scores], "seconds": round(time.perf_counter() - start, 2)}
    for family in scores:
        outcomes[family + suffix] = per_family[family]
        systems[family + suffix] = {**info, "score": family}


def paired_systems(scores: tuple[str, ...], outcomes: dict) -> list[tuple[str, str]]:
    """Which columns are compared item by item: each score against the first, and tuned against zero-shot."""
    pairs = [(scores[0], s) for s in scores[1:] if scores[0] in outcomes and s in outcomes]
    pairs += [(s, s + TUNED) for s in scores if s in outcomes and s + TUNED in outcomes]
    return pairs


def _cell(result: dict) -> str:
    lo, hi = result["ci95"]
    return f"{result['value']:.3f} [{lo:.2f}, {hi:.2f}]"


def _paired_cell(change: dict) -> str:
    return f"+{change['gained']} −{change['lost']} p={change['p_value']:.2g}"


def _paired_title(change: dict) -> str:
    before, after = change["systems"]
    return f"{system_label(after)} vs {system_label(before)}"


def _clean(value):
    """NaN (an undefined chance level) -> null, so --json output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def render_table(file: str, n_items: int, rows: list[dict], systems: dict[str, dict]) -> None:
    names = list(systems)
    paired = rows[0].get("paired", []) if rows else []
    columns = ["tag", "metric", "n", "chance"] + [system_label(s) for s in names] + [_paired_title(c) for c in paired]
    table_rows = []
    for row in rows:
        chance = "—" if math.isnan(row["chance"]) else f"{row['chance']:.3f}"
        table_rows.append([row["tag"], row["metric"], row["n"], chance] + [_cell(row[s]) for s in names]
                          + [_paired_cell(c) for c in row.get("paired", [])])
    models = sorted({systems[s]["model"] for s in names})
    print_table(f"{file} — {n_items} items — {', '.join(models)}", columns, table_rows,
                ["left", "left", "right", "right"] + ["right"] * (len(columns) - 4))
    click.echo("[95% CI]: Wilson score interval over items; ties count as misses.")
    if paired:
        click.echo("A vs B: items A gets right and B wrong (+) and the reverse (−) on the same items, "
                   "exact McNemar p-value.")


@click.command("eval")
@click.argument("file", type=click.Path())
@click.option("--clip", "clip_spec", envvar="DISCFF_CLIP", default=DEFAULT_CLIP, show_default=True,
              help="OpenCLIP model: NAME/PRETRAINED, a local directory, or 'demo' [env DISCFF_CLIP].")
@click.option("--no-clip", is_flag=True, help="Skip the CLIP column.")
@click.option("--no-diffusion", is_flag=True, help="Skip the Discffusion column.")
@click.option("--max-per-tag", type=click.IntRange(min=1), default=None,
              help="Score only the first N items of each tag (a quick slice).")
@engine_options(model_default=None, many_scores=True)
@deltas_option
@click.option("--tuned-only", is_flag=True,
              help="With --deltas: skip the zero-shot Discffusion column (half the U-Net passes).")
@benchmark_options
@json_option
def eval_(file: str, clip_spec: str, no_clip: bool, no_diffusion: bool, max_per_tag: int | None, model: str | None,
          deltas: str | None, tuned_only: bool, benchmark: str | None, benchmark_images: str | None,
          write_jsonl: str | None, as_json: bool, **engine: object) -> None:
    """Measure CLIP and Discffusion on the labelled matching tasks in FILE (JSONL).

    \b
    Each line is one item; image paths are relative to FILE; "tag" is optional:
      {"images": [a, b], "texts": [ta, tb]}         image i matches text i
      {"text": t, "images": [a, b, c], "answer": k} which image matches t
      {"image": a, "texts": [t1, t2], "answer": k}  which text matches a

    Reports accuracy (= R@1), R@5 and Winoground text/image/group scores per tag.
    --score a,b,c gives one column per score, all from one set of U-Net passes.
    With --deltas, each score is reported zero-shot and tuned side by side. With
    --benchmark NAME, FILE is that benchmark's folder as published (README "Real
    benchmarks"). --model defaults to 'demo' with --clip demo, else to Stable
    Diffusion 2.1-base.
    """
    from discff_cli.evaluation import evaluate as ev
    from discff_cli.evaluation.items import load_items

    if no_clip and no_diffusion:
        raise DiscffError("--no-clip and --no-diffusion together leave nothing to evaluate.")
    if deltas and not Path(deltas).is_file():
        raise DiscffError(f"Deltas file '{deltas}' does not exist.")
    if tuned_only and not deltas:
        raise DiscffError("--tuned-only needs --deltas FILE (the tuned column is the only one it keeps).")
    scores = engine["score"]
    config = pop_engine_config(engine)
    if deltas:
        from discff_cli.engine.deltas import model_for_deltas

        model = model_for_deltas(model, deltas, given=model is not None)
    model = model or ("demo" if clip_spec == "demo" else DEFAULT_MODEL)
    check_benchmark_options(file, benchmark, benchmark_images, write_jsonl)
    items = first_per_tag(load_benchmark(benchmark, file, benchmark_images, max_per_tag, write_jsonl, not as_json)
                          if benchmark else load_items(file), max_per_tag)
    table = ev.PairTable.of(items)
    progress = not as_json
    outcomes, systems = {}, {}
    if not no_clip:
        outcomes["clip"], systems["clip"] = run_clip(clip_spec, config.device, table, items, progress)
    if not no_diffusion:
        diffusion = run_diffusion(model, config, scores, deltas, not tuned_only, table, items, progress)
        outcomes.update(diffusion[0])
        systems.update(diffusion[1])
    rows = ev.summarise(items, outcomes, paired=paired_systems(scores, outcomes))
    if as_json:
        print_json(_clean({"file": file, "items": len(items), "kinds": ev.item_kinds(items), "pairs": len(table.images),
                           "ci": ev.CI_METHOD, "systems": systems, "rows": rows}))
    else:
        render_table(file, len(items), rows, systems)
