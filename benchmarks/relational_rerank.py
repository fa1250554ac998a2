"""Does Discffusion reranking lift R@1 over CLIP alone on relational queries of the demo gallery?

    python benchmarks/relational_rerank.py --model demo --images 1000 --queries 240 --rerank 20 \
        --json relational_rerank.json

The same measurement as `discff demo` (discff_cli/evaluation/gallery.py), at a size a GPU makes cheap:
a gallery of demo-world test scenes indexed with the demo CLIP; every query is the caption of a
two-object scene of the gallery ("a red square left of a blue circle"); it goes through the
product's own pipeline (CLIP shortlist of --rerank, one set of U-Net passes read by every score,
each fused with CLIP as `discff search` does). A query is right at R@1 when the top image's scene
really is what the caption says (several scenes may). Every score is compared with CLIP alone on
the same queries: gained, lost, exact McNemar p.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--deltas", default=None, help="rerank with tuned prompt deltas")
    p.add_argument("--images", type=int, default=1000, help="gallery size (test split, ~half two-object)")
    p.add_argument("--queries", type=int, default=240, help="relational queries (two-object captions)")
    p.add_argument("--kinds", default="two-object", help="two-object, single-object or both (comma list)")
    p.add_argument("--rerank", type=int, default=20, help="CLIP shortlist re-scored by Discffusion")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--levels", default="0.2,0.4,0.6,0.8")
    p.add_argument("--fusion", default="zsum")
    p.add_argument("--fusion-weight", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dir", default=None, help="gallery + index directory (default: a temporary one)")
    p.add_argument("--json", dest="json_path", default=None)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from discff_cli.evaluation import gallery as ge
    from discff_cli.cli import app
    from discff_cli.commands.demo import write_gallery
    from discff_cli.engine.config import SCORES, EngineConfig
    from discff_cli.search.pipeline import Fusion, Searcher

    root = Path(args.dir or tempfile.mkdtemp(prefix="relational-rerank-"))
    gallery = write_gallery(root / "images", args.images, args.seed)
    index_dir = str(root / ".discff")
    app.main(["index", "build", str(root / "images"), "--index", index_dir, "--clip", "demo",
              "--model", args.model, "--device", args.device], standalone_mode=False)
    queries = ge.pick_queries([c for c, _ in gallery.values()], [n for _, n in gallery.values()], args.queries,
                              args.seed, kinds=args.kinds.split(","))
    config = EngineConfig(steps=args.steps, levels=tuple(float(x) for x in args.levels.split(",")), seed=args.seed,
                          device=args.device)
    searcher = Searcher(index_dir, "demo", args.model, args.deltas, config, Fusion(args.fusion, args.fusion_weight))
    start = time.time()
    records = ge.measure(searcher, queries, ge.scene_truth({p: c for p, (c, _) in gallery.items()}), args.rerank,
                         SCORES)
    return {"gallery": args.images, "rerank": args.rerank, "model": args.model, "deltas": args.deltas,
            "fusion": {"method": args.fusion, "weight": args.fusion_weight}, "engine": config.to_dict(),
            "time_s": round(time.time() - start, 1), "unet_passes": sum(r.unet_passes for r in records),
            "rows": ge.summarise(ge.rank_systems(records, args.fusion, args.fusion_weight)),
            "fusion_sweep": ge.fusion_sweep(records)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = run(args)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")
    print(f"gallery {out['gallery']}, shortlist {out['rerank']}, fusion {out['fusion']}, "
          f"{out['unet_passes']} U-Net passes in {out['time_s']} s")
    for row in out["rows"]:
        change = row.get("vs_clip_R@1")
        versus = "" if change is None else f"  vs CLIP +{change['gained']} -{change['lost']} p {change['p_value']}"
        print(f"  {row['queries']:13s} {row['system']:12s} n={row['n']:4d} R@1 {row['R@1']['value']:.3f} "
              f"R@5 {row['R@5']['value']:.3f} mean rank {row['mean_rank']:.2f}{versus}")
    print("R@1 by fusion (same passes):")
    for name, rows in out["fusion_sweep"].items():
        print(f"  {name:10s} " + "  ".join(f"{r['queries']}/{r['system']} {r['R@1']['value']:.3f}" for r in rows
                                           if r["system"] != "clip"))


if __name__ == "__main__":
    main()
