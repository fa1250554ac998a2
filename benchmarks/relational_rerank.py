"""Does Discffusion reranking lift R@1 over CLIP alone on relational queries of the demo gallery?

    python benchmarks/relational_rerank.py --model demo --clip demo --images 1000 --queries 240 \
        --rerank 10 --json relational_rerank.json

A gallery of demo-world test scenes is indexed with `discff index build` (the demo CLIP), then
every query, the caption of a two-object scene of the gallery ("a red square left of a blue
circle"), goes through the product's own two-stage search (discff_cli.pipeline.Searcher: CLIP
shortlist of --rerank, Discffusion rerank). A query is answered correctly at R@1 when the
top image's scene really is what the caption says (world.captions): other gallery scenes may
match the same caption, and counting only the scene it was written from would call them wrong.
CLIP alone is the shortlist's own order. Both sides answer the same queries, so the change is
paired: queries gained and lost, exact McNemar p. "shortlist" is the ceiling reranking can
reach: some true match is in CLIP's top --rerank.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--clip", default="demo")
    p.add_argument("--deltas", default=None, help="rerank with tuned prompt deltas")
    p.add_argument("--images", type=int, default=1000, help="gallery size (test split, ~half two-object)")
    p.add_argument("--queries", type=int, default=240, help="relational queries (two-object captions)")
    p.add_argument("--rerank", type=int, default=10, help="CLIP shortlist re-scored by Discffusion")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--levels", default="0.2,0.4,0.6,0.8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dir", default=None, help="gallery + index directory (default: a temporary one)")
    p.add_argument("--json", dest="json_path", default=None)
    return p.parse_args(argv)


def write_gallery(directory: Path, count: int, seed: int) -> list:
    """Test-split scenes saved as scene-NNNN.png; returns their examples in file order."""
    from training.world import make_split

    directory.mkdir(parents=True, exist_ok=True)
    examples = make_split("test", count, seed=seed)
    for i, ex in enumerate(examples):
        path = directory / f"scene-{i:04d}.png"
        if not path.exists():
            ex.image.save(path)
    return examples


def is_match(path: str, query: str, examples: list) -> bool:
    from training.world import captions

    index = int(Path(path).stem.split("-")[1])
    return query in captions(examples[index].scene)


def run(args: argparse.Namespace) -> dict:
    from discff_cli.cli import app
    from discff_cli.engine.config import EngineConfig
    from discff_cli.evaluation import mcnemar_exact, wilson
    from discff_cli.pipeline import Searcher

    root = Path(args.dir or tempfile.mkdtemp(prefix="relational-rerank-"))
    examples = write_gallery(root / "images", args.images, args.seed)
    index_dir = str(root / ".discff")
    app.main(["index", "build", str(root / "images"), "--index", index_dir, "--clip", args.clip,
              "--model", args.model, "--device", args.device], standalone_mode=False)
    two = [ex.caption for ex in examples if len(ex.scene.objects) == 2]
    queries = random.Random(args.seed).sample(two, min(args.queries, len(two)))
    config = EngineConfig(steps=args.steps, levels=tuple(float(x) for x in args.levels.split(",")), seed=args.seed,
                          device=args.device)
    searcher = Searcher(index_dir, args.clip, args.model, args.deltas, config)
    rows, t0 = [], time.time()
    for q in queries:
        results = searcher.search(q, args.rerank, args.rerank)
        by_clip = sorted(results, key=lambda r: -r["clip_score"])
        rows.append({"query": q, "clip": is_match(by_clip[0]["path"], q, examples),
                     "rerank": is_match(results[0]["path"], q, examples),
                     "shortlist": any(is_match(r["path"], q, examples) for r in results)})
    n = len(rows)
    out = {"n_queries": n, "gallery": args.images, "rerank": args.rerank, "model": args.model, "clip": args.clip,
           "deltas": args.deltas, "engine": config.to_dict(), "time_s": round(time.time() - t0, 1)}
    for key in ("clip", "rerank", "shortlist"):
        k = sum(r[key] for r in rows)
        out[f"R@1_{key}" if key != "shortlist" else "shortlist_has_match"] = {
            "value": round(k / n, 4), "ci95": [round(x, 4) for x in wilson(k, n)]}
    gained = sum(r["rerank"] and not r["clip"] for r in rows)
    lost = sum(r["clip"] and not r["rerank"] for r in rows)
    out["paired"] = {"gained": gained, "lost": lost, "p_value": float(f"{mcnemar_exact(gained, lost):.3g}")}
    out["rows"] = rows
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = run(args)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")
    p = out["paired"]
    print(f"relational queries: {out['n_queries']}, gallery {out['gallery']}, shortlist {out['rerank']}")
    for key in ("R@1_clip", "R@1_rerank", "shortlist_has_match"):
        v = out[key]
        print(f"  {key:20s} {v['value']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    print(f"  rerank vs CLIP: +{p['gained']} -{p['lost']}, McNemar p {p['p_value']}")


if __name__ == "__main__":
    main()
