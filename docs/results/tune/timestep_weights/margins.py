"""Per-condition score margins (positive minus negative) of the demo few-shot triplets, saved for unguarded.py.

Same scorer grid (--steps 4 --levels 0.3,0.7), split (--val-fraction 0.2), negatives (1 per line)
and triplets (every epoch's draws) as `discff tune --timestep-weights` uses; 2-core CPU, ~8 min.
"""
import numpy as np
import torch

torch.set_num_threads(1)
from discff_cli.engine.scorer import load_scorer
from discff_cli.engine.config import EngineConfig
from training.tune import data as td
from training.tune import Tuner, TuneConfig
from training.tune.timestep_weights import condition_margins
sc = load_scorer("demo", EngineConfig(steps=4, levels=(0.3, 0.7), device="cpu"))
cfg = TuneConfig(prompt_deltas=False, timestep_weights=True, val_fraction=0.2, negatives_per_line=1)
t = Tuner(sc, "/tmp/t23/fs/fewshot.jsonl", "/tmp/t23/x.safetensors", cfg)
seen, train = set(), []
for e in range(cfg.epochs):
    for tr in (x for b in t.epoch_batches(e) for x in b):
        k = ((tr.image, tr.text), tr.negative_pair)
        if k not in seen: seen.add(k); train.append(tr)
np.savez("/tmp/t23/margins.npz", train=condition_margins(sc, t.cache, train).numpy(), val=condition_margins(sc, t.cache, t.val_triplets).numpy())
print("saved")
