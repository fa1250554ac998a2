"""Fixtures of the tune tests: a few coloured images with captions, and a fast engine config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from discff_cli.engine.config import EngineConfig

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
# The tuning tests exercise Eq. 7 head weighting, which weighs the attention term; the denoising
# score is tuned in its own tests (and reaches every delta, see test_tune_training).
FAST = {"steps": 2, "levels": (0.5,), "device": "cpu", "score": "attention"}
FAST_CLI = ["--steps", "2", "--levels", "0.5", "--device", "cpu"]


def fast_config(**overrides) -> EngineConfig:
    return EngineConfig(**{**FAST, **overrides})


def write_images(folder: Path, copies: int = 2) -> list[tuple[str, str]]:
    """Noisy flat-colour PNGs: (file name, colour name)."""
    from PIL import Image

    rng = np.random.RandomState(0)
    made = []
    for i in range(copies):
        for name, rgb in COLOURS.items():
            arr = np.clip(np.array(rgb)[None, None, :] + rng.randn(64, 64, 3) * 20, 0, 255).astype("uint8")
            file = f"{name}_{i}.png"
            Image.fromarray(arr).save(folder / file)
            made.append((file, name))
    return made


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture()
def colour_pairs(tmp_path: Path) -> Path:
    """8 lines, each with two hard negative captions (other colours)."""
    rows = [{"image": f, "text": f"a {c} picture", "tag": "colour",
             "negative_texts": [f"a {o} picture" for o in COLOURS if o != c][:2]} for f, c in write_images(tmp_path)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny models run fastest on one intra-op thread, and a busy 2-core CI box thrashes with two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
