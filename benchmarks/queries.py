"""Time `discff search --queries FILE --rerank R` with and without `--ray local`.

    python benchmarks/queries.py                       # 12 reranked queries, bundled demo models, CPU
    python benchmarks/queries.py --workers 2 --queries 24 --rerank 8 --device cpu

It indexes a folder of random-colour images with the bundled demo CLIP and demo diffusion model
(tiny models trained on the demo world, so this times the machinery, not SD 2.1), writes a queries
file, and runs the same command twice as a user would (a fresh process each, model loads and Ray
start included). It prints, for each run: wall seconds and queries per second end to end; the
seconds spent reranking (`stats.rerank_s` summed: the actors' busy time with --ray); one rerank
worker's median seconds per query and U-Net passes per second, the figure that multiplies with
the number of GPUs; and whether the two runs agree (same result order; largest score difference).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ("red", "blue", "green", "yellow", "circle", "square", "triangle", "left of", "above", "two")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--queries", type=int, default=12)
    p.add_argument("--rerank", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--levels", default="0.5")
    p.add_argument("--workers", type=int, default=None, help="rerank actors (default: the command's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        index_dir, queries = prepare(work, args)
        engine = ["--rerank", str(args.rerank), "--steps", str(args.steps), "--levels", args.levels,
                  "--device", args.device, "--json"]
        base = ["search", "--queries", str(queries), "--index", str(index_dir), *engine]
        workers = ["--workers", str(args.workers)] if args.workers else []
        local = timed(base)
        remote = timed([*base, "--ray", "local", *workers])
    report(args, local, remote)


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """A folder of random images indexed with the demo models, and a file of queries."""
    rng = np.random.default_rng(0)
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(args.images):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"img{i:04d}.png")
    index_dir = work / "idx"
    run(["index", "build", str(folder), "--index", str(index_dir), "--clip", "demo", "--model", "demo",
         "--device", args.device, "--json"])
    queries = work / "queries.txt"
    queries.write_text("\n".join(" ".join(rng.choice(WORDS, 3)) for _ in range(args.queries)) + "\n")
    return index_dir, queries


def run(argv: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "discff_cli", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"discff {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def timed(argv: list[str]) -> dict:
    start = time.perf_counter()
    docs = [json.loads(line) for line in run(argv).splitlines()]
    stats = [d["stats"] for d in docs if "stats" in d]
    # medians per query: a local run's first rerank_s also holds the model load (an actor loads before)
    return {"seconds": time.perf_counter() - start, "docs": docs, "passes": sum(s["unet_passes"] for s in stats),
            "busy": sum(s["rerank_s"] for s in stats), "query_s": float(np.median([s["rerank_s"] for s in stats])),
            "passes_per_s": float(np.median([s["unet_passes"] / s["rerank_s"] for s in stats]))}


def report(args: argparse.Namespace, local: dict, remote: dict) -> None:
    n = len(local["docs"])
    print(f"{n} queries, each reranking its top {args.rerank} (--steps {args.steps} --levels {args.levels}), "
          f"{args.images} images, demo models, --device {args.device}")
    for name, run_ in (("local", local), (f"--ray local (--workers {args.workers or 'default'})", remote)):
        print(f"  {name:34s} {run_['seconds']:7.1f} s end to end ({n / run_['seconds']:.2f} queries/s); "
              f"reranking busy {run_['busy']:6.1f} s in all; one worker: median {run_['query_s']:.2f} s per "
              f"query ({1 / run_['query_s']:.2f} queries/s), {run_['passes_per_s']:.1f} U-Net passes/s "
              f"({run_['passes']} passes in all)")
    same_order = all([r["id"] for r in a["results"]] == [r["id"] for r in b["results"]]
                     for a, b in zip(local["docs"], remote["docs"]))
    diffs = [abs(x["rerank_score"] - y["rerank_score"]) for a, b in zip(local["docs"], remote["docs"])
             for x, y in zip(a["results"], b["results"]) if x["rerank_score"] is not None and y["rerank_score"] is not None]
    print(f"  same result order in every query: {same_order}; largest rerank-score difference {max(diffs, default=0):.2e}")


if __name__ == "__main__":
    main()
