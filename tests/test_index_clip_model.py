"""index.clip_model: the tiny CLIP goes through the same loading path as real weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from index.clip_model import load_clip
from index.errors import ModelUnavailable
from conftest_index import other_clip_dir, tiny_clip_dir  # noqa: F401


def test_embeddings_are_unit_norm_and_match_the_model(tiny_clip_dir):
    clip = load_clip(tiny_clip_dir, device="cpu")
    images = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (20, 50), (0, 0, 255))]
    emb = clip.embed_images(images)
    assert emb.shape == (2, clip.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        direct = clip.model.encode_image(torch.stack([clip.preprocess(im) for im in images]))
    direct = (direct / direct.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(emb, direct, atol=1e-5)
    texts = clip.embed_texts(["a red square", "a blue square", "a red square"])
    np.testing.assert_allclose(texts[0], texts[2], atol=1e-6)
    assert not np.allclose(texts[0], texts[1])


def test_fingerprint_identifies_weights_not_file_format(tiny_clip_dir, other_clip_dir, tmp_path):
    clip = load_clip(tiny_clip_dir, device="cpu")
    assert load_clip(tiny_clip_dir / "open_clip_model.safetensors", "cpu").fingerprint == clip.fingerprint
    assert load_clip(other_clip_dir, "cpu").fingerprint != clip.fingerprint


@pytest.mark.parametrize("spec", ["ViT-H-14/no-such-tag", "no-such-model", "/no/such/dir"])
def test_unavailable_weights_raise_one_sentence(spec):
    with pytest.raises(ModelUnavailable) as info:
        load_clip(spec, device="cpu")
    assert "\n" not in str(info.value)
