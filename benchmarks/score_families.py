"""Every score family side by side on the demo world, full grid and `--prune`: how the default is chosen.

    python benchmarks/score_families.py --out docs/results/eval/score_families [--model demo]

One command, so it can be rerun whenever the demo diffusion model is retrained. Two measurements,
both through the product's own code paths:

1. the demo gallery (what `discff demo` prints): test-world scenes indexed with the demo CLIP, queries
   of two kinds, each shortlisted and reranked by `Reranker.rerank` (the path `discff search` runs),
   every family read from one set of passes and fused with CLIP as search fuses; then the same queries
   again with `--prune` (successive halving, every family from one memo of passes): U-Net passes and
   top-1 agreement with the full grid, per family;
2. `discff eval` on an export of the world's test split (single objects, attribute/relation/shape
   swaps, Winoground-style 2x2): accuracy and group score per family from one set of passes, then
   `--prune` (choice items pruned, matrix items on the full grid): passes and outcome agreement.

Writes OUT.json (everything) and OUT.md (the tables the README quotes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="path stem: writes OUT.json and OUT.md")
    p.add_argument("--work", default="/tmp/score_families", help="gallery, index and eval export go here")
    p.add_argument("--model", default="demo")
    p.add_argument("--images", type=int, default=300, help="gallery size")
    p.add_argument("--queries", type=int, default=20, help="gallery queries of each kind")
    p.add_argument("--rerank", type=int, default=20)
    p.add_argument("--eval-per-tag", type=int, default=10, help="eval items of each tag")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--levels", default="0.5")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def gallery(args: argparse.Namespace, config: Any) -> dict:
    """Full-grid and pruned reranks of the same gallery queries, every family."""
    from discff_cli.evaluation import gallery as ge
    from discff_cli.cli import app
    from discff_cli.commands.demo import write_gallery
    from discff_cli.engine.config import SCORES
    from discff_cli.search.fusion import DEFAULT_FUSION, DEFAULT_WEIGHT
    from discff_cli.search.pipeline import Fusion, Searcher

    root = Path(args.work) / "gallery"
    scenes = write_gallery(root / "images", args.images, args.seed)
    with contextlib.redirect_stdout(sys.stderr):
        app.main(["index", "build", str(root / "images"), "--index", str(root / ".discff"), "--clip", "demo",
                  "--model", args.model, "--device", args.device], standalone_mode=False)
    queries = ge.pick_queries([c for c, _ in scenes.values()], [n for _, n in scenes.values()], args.queries,
                              args.seed)
    truth = ge.scene_truth({p: caps for p, (caps, _) in scenes.items()})
    searcher = Searcher(str(root / ".discff"), None, args.model, None, config, Fusion())
    runs = {}
    for name, prune in (("full", False), ("prune", True)):
        start = time.perf_counter()
        records = ge.measure(searcher, queries, truth, args.rerank, SCORES, prune=prune)
        runs[name] = {"records": records, "seconds": round(time.perf_counter() - start, 1),
                      "unet_passes": sum(r.unet_passes for r in records)}
    full, pruned = runs["full"]["records"], runs["prune"]["records"]
    agreement = {f: sum(_top(a, f) == _top(b, f) for a, b in zip(full, pruned)) / len(full) for f in SCORES}
    return {"images": args.images, "queries": len(queries), "rerank": args.rerank,
            "fusion": {"method": DEFAULT_FUSION, "weight": DEFAULT_WEIGHT},
            "rows": ge.summarise(ge.rank_systems(full, DEFAULT_FUSION, DEFAULT_WEIGHT)),
            "prune_rows": ge.summarise(ge.rank_systems(pruned, DEFAULT_FUSION, DEFAULT_WEIGHT)),
            "unet_passes": {k: v["unet_passes"] for k, v in runs.items()},
            "seconds": {k: v["seconds"] for k, v in runs.items()}, "prune_top1_agreement": agreement}


def _top(record: Any, family: str) -> int:
    """The fused top-1 of one gallery query (shortlist position), as search would show it."""
    from discff_cli.search.fusion import DEFAULT_FUSION, DEFAULT_WEIGHT, final_order

    return final_order(record.clip_scores, record.scores[family], DEFAULT_FUSION, DEFAULT_WEIGHT)[0]


def evaluation(args: argparse.Namespace, config: Any) -> dict:
    """`discff eval` figures of every family, full grid and pruned, on a fresh export of the test split."""
    from dataclasses import replace

    from discff_cli.evaluation import evaluate as ev
    from discff_cli.engine.config import SCORES
    from discff_cli.engine.scorer import load_scorer
    from discff_cli.evaluation.items import first_per_tag, load_items
    from training.world.export import export_eval

    folder = Path(args.work) / "eval"
    export_eval(folder, n_per_tag=args.eval_per_tag)
    names = ["single_object", "attribute_swap", "relation_swap", "shape_swap", "winoground"]
    (folder / "all.jsonl").write_text("".join((folder / f"{n}.jsonl").read_text() for n in names))
    items = first_per_tag(load_items(str(folder / "all.jsonl")), args.eval_per_tag)
    table = ev.PairTable.of(items)
    out: dict[str, Any] = {"items": len(items), "pairs": len(table.images)}
    outcomes = {}
    for name, prune in (("full", False), ("prune", True)):
        scorer = load_scorer(args.model, replace(config, prune=prune))
        start = time.perf_counter()
        outcomes[name], cost = ev.diffusion_outcomes(scorer, items, table, SCORES)
        out[name] = {"cost": cost, "seconds": round(time.perf_counter() - start, 1),
                     "rows": ev.summarise(items, outcomes[name])}
    out["prune_outcome_agreement"] = {
        f: sum(a == b for a, b in zip(outcomes["full"][f], outcomes["prune"][f])) / len(items) for f in SCORES}
    return out


def markdown(result: dict) -> str:
    """The tables the README quotes."""
    from discff_cli.engine.config import SCORES

    g, e = result["gallery"], result["eval"]
    lines = [f"# Score families on the demo world ({result['machine']})", "", f"    {result['command']}", "",
             f"## Gallery: {g['images']} images, {g['queries']} queries, CLIP shortlist of {g['rerank']}, "
             f"fused ({g['fusion']['method']} {g['fusion']['weight']})", "",
             "| queries | system | R@1 [95% CI] | R@5 | mean rank | R@1 vs CLIP (+/−, p) |", "|---|---|---|---|---|---|"]
    for r in g["rows"]:
        ci = r["R@1"]["ci95"]
        vs = r.get("vs_clip_R@1")
        lines.append(f"| {r['queries']} | {r['system']} | {r['R@1']['value']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] | "
                     f"{r['R@5']['value']:.2f} | {r['mean_rank']:.2f} | "
                     + ("" if vs is None else f"+{vs['gained']} −{vs['lost']}, p={vs['p_value']:.2g}") + " |")
    lines += ["", f"U-Net passes: full grid {g['unet_passes']['full']} ({g['seconds']['full']} s), "
              f"`--prune` {g['unet_passes']['prune']} ({g['seconds']['prune']} s); `--prune` top-1 = full top-1 on "
              + ", ".join(f"{f} {g['prune_top1_agreement'][f]:.0%}" for f in SCORES) + " of the queries.", "",
              f"## Eval: {e['items']} items ({e['pairs']} pairs)", "",
              "| tag | metric | n | chance | " + " | ".join(SCORES) + " |", "|---|---|---|---|" + "---|" * len(SCORES)]
    for r in e["full"]["rows"]:
        lines.append(f"| {r['tag']} | {r['metric']} | {r['n']} | {r['chance']:.3f} | "
                     + " | ".join(f"{r[f]['value']:.3f} [{r[f]['ci95'][0]:.2f}, {r[f]['ci95'][1]:.2f}]" for f in SCORES)
                     + " |")
    full, pruned = e["full"]["cost"], e["prune"]["cost"]
    lines += ["", f"U-Net passes: full grid {full['unet_passes']} ({e['full']['seconds']} s), `--prune` "
              f"{pruned['unet_passes']} ({e['prune']['seconds']} s); same item outcome on "
              + ", ".join(f"{f} {e['prune_outcome_agreement'][f]:.0%}" for f in SCORES) + " of the items.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from discff_cli.engine.config import EngineConfig

    config = EngineConfig(steps=args.steps, levels=tuple(float(x) for x in args.levels.split(",")), seed=args.seed,
                          device=args.device)
    result = {"command": "python benchmarks/score_families.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": os.environ.get("DISCFF_MACHINE", "2-core CPU"), "engine": config.to_dict(),
              "gallery": gallery(args, config)}
    Path(args.out + ".json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")  # kept if eval fails
    result["eval"] = evaluation(args, config)
    for run in ("full", "prune"):
        result["eval"][run]["cost"].pop("prune", None)
    Path(args.out + ".json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(result))
    print(markdown(result))
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


if __name__ == "__main__":
    main()
