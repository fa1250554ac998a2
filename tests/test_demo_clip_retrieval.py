"""The bundled demo CLIP: loads offline as `--clip demo`, stays small, and really learned the world."""

from __future__ import annotations

import numpy as np
import pytest

from discff_cli.clip_resolve import load_clip_cli, resolve_clip
from training import world as w
from training.world.export import SINGLE_CAPTIONS

N_ITEMS = 300


@pytest.fixture(scope="module")
def demo_clip():
    return load_clip_cli("demo", device="cpu")


def test_demo_clip_is_shipped_small_in_local_dir_format():
    from pathlib import Path

    folder = Path(resolve_clip("demo"))
    assert (folder / "open_clip_config.json").is_file()
    weights = folder / "open_clip_model.safetensors"
    assert weights.stat().st_size < 9 * 2**20


def test_demo_clip_single_object_r_at_1_on_the_test_split(demo_clip):
    """Image -> the 12 colour-shape captions, over 300 single-object test scenes: R@1 >= 0.9."""
    examples = [ex for _, ex in w.iter_split("test", N_ITEMS, n_objects=1)]
    images = demo_clip.embed_images([ex.image for ex in examples])
    texts = demo_clip.embed_texts(SINGLE_CAPTIONS)
    predicted = (images @ texts.T).argmax(axis=1)
    truth = np.array([SINGLE_CAPTIONS.index(w.captions(ex.scene)[0]) for ex in examples])
    r_at_1 = float(np.mean(predicted == truth))
    assert r_at_1 >= 0.9, r_at_1


def test_demo_clip_matches_paraphrases_and_rejects_wrong_colours(demo_clip):
    """All templates of a scene score above captions with a replaced attribute, for most scenes."""
    examples = [ex for _, ex in w.iter_split("test", 60, n_objects=1)]
    images = demo_clip.embed_images([ex.image for ex in examples])
    trues = [w.captions(ex.scene) for ex in examples]
    falses = [w.hard_negatives(ex.scene)["replaced_attribute"] for ex in examples]
    # Every distinct caption embedded once (the scenes share their templated captions), not per scene.
    distinct = list(dict.fromkeys(t for texts in trues + falses for t in texts))
    embedded = dict(zip(distinct, demo_clip.embed_texts(distinct)))
    wins = []
    for true_texts, false_texts, img in zip(trues, falses, images):
        true = np.stack([embedded[t] for t in true_texts]) @ img
        false = np.stack([embedded[t] for t in false_texts]) @ img
        wins.append(true.min() > false.max())
    assert np.mean(wins) >= 0.8
