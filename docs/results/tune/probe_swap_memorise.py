"""Can the prompt deltas fit compositional swaps at all on the demo model?

Fits p^k, p^v (the tune loop's own train_step, one fixed condition t=500, level 0.5) to the first
16 attribute-swap triplets of a swaps-only few-shot file and prints the triplet loss. If the loss
falls well below the margin, the deltas have the capacity to separate these pairs, so a failure
to improve held-out swaps is one of generalisation, not of expressiveness. Run from the repository
root after `python -m training.world export-fewshot fs/swaps.jsonl --swaps-only`:

    python docs/results/tune/probe_swap_memorise.py fs/swaps.jsonl
"""

from __future__ import annotations

import sys

import torch

from discff_cli.engine.config import EngineConfig
from discff_cli.engine.scorer import Condition, load_scorer
from training.tune import data as td
from discff_cli.engine.deltas import attach_deltas
from training.tune import PairCache, TuneConfig, train_step


def main(path: str, n: int = 16, steps: int = 60, lr: float = 1e-2) -> None:
    torch.manual_seed(0)
    scorer = load_scorer("demo", EngineConfig(steps=5, levels=(0.5,), device="cpu"))
    examples = td.read_examples(path)[:n]
    triplets = [td.Triplet(e.image, e.text, neg_text=e.negative_texts[0]) for e in examples]  # attribute swaps
    cache = PairCache(scorer, triplets)
    optimizer = torch.optim.AdamW(attach_deltas(scorer), lr=lr, weight_decay=0.0)
    for step in range(steps):
        optimizer.zero_grad()
        loss = train_step(scorer, cache, triplets, Condition(0, 500, 0.5), TuneConfig())
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:3d}  triplet loss {loss.item():.4f}  (margin 0.2 = no separation)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
