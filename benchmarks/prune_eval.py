"""`--prune` against full scoring on the demo world's eval files: top-1 agreement, accuracy, U-Net passes.

    python -m training.world export-eval /tmp/eval
    python benchmarks/prune_eval.py --eval-dir /tmp/eval --model demo [--max-items 50] [--device cuda]

Every query of the files (an image with its captions; for Winoground items each of the two images
with both captions and each caption with both images) is one ranking of candidates. Full scoring
runs every candidate on the whole (timestep, level) grid once, per condition, in large batches;
successive halving (discff_cli.engine.prune.prune_scores, the code `--prune` runs) is then replayed
on those per-condition scores, counting the U-Net passes it asks for. The replay is exact because
a pair's score under a condition does not depend on what else is in the batch (tested in
tests/test_engine_score.py); `--check N` also runs N queries through a real `--prune` Scorer and
asserts the same top-1 and pass count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Replay:
    """Looks up per-condition scores instead of running the U-Net; same interface prune_scores uses."""

    def __init__(self, conditions: list[Any], table: Any) -> None:
        self.conditions = conditions
        self.table = table  # [n_pairs, n_conditions] float tensor
        self.column = {c: i for i, c in enumerate(conditions)}

    def scores_of(self, pair_ids: Any) -> Any:
        """The `score(ids, conditions)` function prune_scores calls, for one query's candidates."""
        def score(ids: list[int], conditions: list[Any]) -> Any:
            cols = [self.column[c] for c in conditions]
            return self.table[pair_ids[ids].long()][:, cols]

        return score


def queries_of(item: dict) -> list[tuple[list[tuple[str, str]], int]]:
    """(candidate (image, text) pairs, index of the right one) for every ranking an item holds."""
    if "image" in item:
        return [([(item["image"], t) for t in item["texts"]], item["answer"])]
    if "text" in item:
        return [([(im, item["text"]) for im in item["images"]], item["answer"])]
    images, texts = item["images"], item["texts"]
    out = [([(im, t) for t in texts], i) for i, im in enumerate(images)]
    return out + [([(im, t) for im in images], j) for j, t in enumerate(texts)]


def full_table(scorer: Any, pairs: list[tuple[str, str]], base: Path) -> Any:
    """Per-condition scores of every distinct pair: [n_pairs, n_conditions]."""
    import torch

    latents = scorer.encode_images([str(base / im) for im, _ in pairs])
    states, mask = scorer.encode_texts([t for _, t in pairs])
    with torch.inference_mode():
        return scorer.score_conditions(latents, states, mask).float().cpu()


def evaluate_file(scorer: Any, path: Path, max_items: int | None, z: float, start: int) -> dict:
    import torch

    from discff_cli.engine.prune import prune_scores

    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:max_items]
    queries = [q for item in items for q in queries_of(item)]
    pairs = list(dict.fromkeys(p for cands, _ in queries for p in cands))
    index = {p: i for i, p in enumerate(pairs)}
    t0 = time.perf_counter()
    table = full_table(scorer, pairs, path.parent)
    seconds = time.perf_counter() - t0
    replay = Replay(scorer.conditions, table)
    stats = {"file": path.name, "queries": len(queries), "candidates_per_query": sum(len(c) for c, _ in queries) / len(queries),
             "full_correct": 0, "prune_correct": 0, "agree": 0, "full_passes": 0, "prune_passes": 0,
             "full_seconds": round(seconds, 2)}
    for cands, answer in queries:
        ids = torch.tensor([index[p] for p in cands])
        full = table[ids].mean(dim=1)
        pruned, report = prune_scores(replay.scores_of(ids), len(ids), scorer.conditions, z=z, start_fraction=start)
        top_full, top_prune = int(full.argmax()), int(pruned.argmax())
        stats["full_correct"] += top_full == answer
        stats["prune_correct"] += top_prune == answer
        stats["agree"] += top_full == top_prune
        stats["full_passes"] += report.full_passes
        stats["prune_passes"] += report.passes
    n = len(queries)
    stats.update(full_accuracy=stats["full_correct"] / n, prune_accuracy=stats["prune_correct"] / n,
                 top1_agreement=stats["agree"] / n, pass_reduction=stats["full_passes"] / stats["prune_passes"])
    return stats


def check_real(scorer_factory: Any, path: Path, n: int) -> int:
    """Run the first n queries through a real --prune Scorer; assert it matches the replay."""
    import torch

    from discff_cli.engine.prune import prune_scores

    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    queries = [q for item in items for q in queries_of(item)][:n]
    pruned, full = scorer_factory(True), scorer_factory(False)
    for cands, _ in queries:
        images, texts = [str(path.parent / im) for im, _ in cands], [t for _, t in cands]
        pruned.encode_images(images)  # the VAE and the empty prompt are not what the replay counts
        pruned.rank(images, texts, prune=False)
        real = pruned.rank(images, texts, prune=True)
        table = full_table(full, cands, path.parent)
        replayed, report = prune_scores(Replay(full.conditions, table).scores_of(torch.arange(len(cands))),
                                        len(cands), full.conditions)
        top = int(real.scores[pruned.config.score].argmax())
        assert top == int(replayed.argmax()), "real --prune and replay disagree on top-1"
        assert real.unet_passes == report.passes, "real --prune and replay differ in U-Net passes"
    return len(queries)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval-dir", required=True, help="output of `python -m training.world export-eval DIR`")
    p.add_argument("--model", default="demo")
    p.add_argument("--max-items", type=int, default=None, help="first N items of each file")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--levels", default="0.2,0.4,0.6,0.8")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--z", type=float, default=None, help="settled threshold (default: prune.SETTLED_Z)")
    p.add_argument("--start-fraction", type=int, default=None, help="first round sees 1/N of the grid")
    p.add_argument("--check", type=int, default=2, help="queries per file also run through a real --prune Scorer")
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from discff_cli.engine import prune
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import Scorer, resolve_device
    from discff_cli.engine.models import load_sd

    device = resolve_device(args.device)
    parts = load_sd(args.model, device=str(device), dtype=getattr(torch, args.dtype))
    levels = tuple(float(s) for s in args.levels.split(","))

    def factory(with_prune: bool) -> Any:
        return Scorer(parts, EngineConfig(steps=args.steps, levels=levels, device=str(device),
                                          batch_size=args.batch_size, prune=with_prune), device)

    z = prune.SETTLED_Z if args.z is None else args.z
    start = prune.START_FRACTION if args.start_fraction is None else args.start_fraction
    scorer = factory(False)
    results = []
    print(f"model {args.model} on {device} ({args.dtype}), grid {len(scorer.conditions)} conditions, "
          f"z {z}, first round 1/{start} of the grid")
    print(f"{'file':22} {'queries':>7} {'cand':>5} {'full acc':>8} {'prune acc':>9} {'top-1 agree':>11} "
          f"{'passes full':>11} {'pruned':>8} {'reduction':>9}")
    for path in sorted(Path(args.eval_dir).glob("*.jsonl")):
        s = evaluate_file(scorer, path, args.max_items, z, start)
        if args.check:
            s["checked_real"] = check_real(factory, path, args.check)
        results.append(s)
        print(f"{s['file']:22} {s['queries']:7d} {s['candidates_per_query']:5.1f} {s['full_accuracy']:8.3f} "
              f"{s['prune_accuracy']:9.3f} {s['top1_agreement']:11.3f} {s['full_passes']:11d} {s['prune_passes']:8d} "
              f"{s['pass_reduction']:8.2f}x", flush=True)
    total = {key: sum(r[key] for r in results) for key in ("queries", "full_passes", "prune_passes", "agree",
                                                          "full_correct", "prune_correct")}
    total.update(top1_agreement=total["agree"] / total["queries"], pass_reduction=total["full_passes"] / total["prune_passes"],
                 full_accuracy=total["full_correct"] / total["queries"], prune_accuracy=total["prune_correct"] / total["queries"])
    print(f"{'all':22} {total['queries']:7d} {'':5} {total['full_accuracy']:8.3f} {total['prune_accuracy']:9.3f} "
          f"{total['top1_agreement']:11.3f} {total['full_passes']:11d} {total['prune_passes']:8d} "
          f"{total['pass_reduction']:8.2f}x")
    out = {"model": args.model, "device": str(device), "dtype": args.dtype, "z": z, "start_fraction": start,
           "conditions": len(scorer.conditions), "files": results, "all": total}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
