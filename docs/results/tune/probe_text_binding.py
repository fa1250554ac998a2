"""Does the demo diffusion model's text encoder know which colour goes with which shape?

A linear probe on the hidden state of the second shape token ("... a blue square": the token
"square") of two-object captions. If it can tell which of the caption's two colours belongs to that
shape, the binding is present in the text states that the prompt deltas p^k, p^v act on, and a
failure to learn swaps comes from the image side. Run from the repository root:

    python docs/results/tune/probe_text_binding.py
"""

from __future__ import annotations

import itertools
import random

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from discff_cli.engine.models import resolve_model
from training.world import COLOURS, SHAPES


def states() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    path = resolve_model("demo")
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").eval()
    rows = [(f"a {c1} {s1} {rel} a {c2} {s2}", c1, c2, s2)
            for c1, s1, c2, s2 in itertools.product(COLOURS, SHAPES, COLOURS, SHAPES) if c1 != c2
            for rel in ("left of", "above")]
    # Held out: every caption whose first shape is a triangle (no near-duplicate crosses the split).
    random.Random(0).shuffle(rows)
    rows.sort(key=lambda r: r[0].split()[2] == "triangle")
    shape_states, eos_states, own_first = [], [], []
    for caption, c1, c2, s2 in rows:
        ids = tok(caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = enc(ids).last_hidden_state[0]
        words = tok.convert_ids_to_tokens(ids[0])
        eos = words.index(tok.eos_token)
        shape_states.append(hidden[max(i for i, w in enumerate(words[:eos]) if w.startswith(s2))])
        eos_states.append(hidden[eos])
        own_first.append(int(COLOURS.index(c2) < COLOURS.index(c1)))  # which of the two colours is the shape's own
    return torch.stack(shape_states), torch.stack(eos_states), torch.tensor(own_first)


def probe(x: torch.Tensor, y: torch.Tensor) -> float:
    """Held-out accuracy of a logistic-regression probe (the last third: first shape = triangle)."""
    cut = 2 * len(y) // 3
    z = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z[:cut] @ w + b, y[:cut]) + 1e-3 * w.pow(2).sum()
        loss.backward()
        opt.step()
    return float(((z[cut:] @ w + b).argmax(1) == y[cut:]).float().mean())


if __name__ == "__main__":
    torch.manual_seed(0)
    shape_x, eos_x, y = states()
    print(f"{len(y)} two-object captions; chance 0.5")
    print(f"second shape token -> which colour is its own: {probe(shape_x, y):.3f}")
    print(f"EOS token          -> which colour is the second object's: {probe(eos_x, y):.3f}")
