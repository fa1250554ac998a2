"""Write the timestep weights `discff tune --timestep-weights` fits *before* its accuracy guard.

On the demo world the guard kept uniform weights (no fitted step reached the uniform grid's
accuracy on the few-shot triplets), which makes a paired test against uniform trivially 0/0. To
measure what the fitted weighting itself does, this takes the margins written by margins.py
(same split, grid and triplets as the tune run), runs the same fit (training/timestep_weights.py:
w = C·softmax(θ), logistic loss scaled by the uniform margins' spread, L2 1e-2, 300 Adam steps)
and saves its last step's weights to a deltas file that `discff eval --deltas` reads.

    python docs/results/tune/timestep_weights/margins.py      # /tmp/t23/margins.npz
    python docs/results/tune/timestep_weights/unguarded.py    # /tmp/t23/unguarded.safetensors
"""

import numpy as np
import torch

from discff_cli.engine.config import EngineConfig
from discff_cli.engine.deltas import save_deltas_file
from discff_cli.engine.scorer import load_scorer
from training import timestep_weights as tw

margins = torch.tensor(np.load("/tmp/t23/margins.npz")["train"])
n_cond = margins.shape[1]
tau = float((margins.mean(dim=1)).std())
theta = torch.zeros(n_cond, dtype=torch.float64, requires_grad=True)
optimizer = torch.optim.Adam([theta], lr=tw.LR)
for _ in range(tw.STEPS):
    weights = n_cond * torch.softmax(theta, dim=0)
    loss = torch.nn.functional.softplus(-(margins @ weights) / n_cond / tau).mean() + tw.L2 * theta.pow(2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
weights = (n_cond * torch.softmax(theta.detach(), dim=0)).tolist()
scorer = load_scorer("demo", EngineConfig(steps=4, levels=(0.3, 0.7), device="cpu"))
scorer.condition_weights = {(c.timestep, c.level): w for c, w in zip(scorer.conditions, weights)}
save_deltas_file("/tmp/t23/unguarded.safetensors", scorer, 0, {"note": "unguarded fit, unguarded.py"})
print([round(w, 3) for w in weights])
