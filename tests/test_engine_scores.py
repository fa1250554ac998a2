"""The score families read from one set of U-Net passes: the denoising error, the empty-prompt term, the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from discff_cli.engine.config import SCORES, EngineConfig
from discff_cli.engine.scorer import Scorer

TEXTS = ["a red circle", "a blue square left of a green triangle", "two yellow circles"]


def make_scorer(parts, **overrides) -> Scorer:
    return Scorer(parts, EngineConfig(**{"steps": 2, "levels": (0.5, 1.0), "device": "cpu", **overrides}))


def _images():
    return [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (70, 64), (20, 40, 210))]


def test_denoising_error_equals_a_direct_computation_from_the_unet_output(tiny_parts, sample_image):
    scorer = make_scorer(tiny_parts)
    readings = scorer.read_pairs([sample_image], [TEXTS[1]], ("denoise",))
    latent = scorer.encode_images([sample_image])[0]
    states = {text: scorer.encode_texts([text])[0] for text in (TEXTS[1], "")}
    alphas = tiny_parts.scheduler.alphas_cumprod
    for j, cond in enumerate(scorer.conditions):
        eps = torch.randn(scorer.latent_shape, generator=torch.Generator().manual_seed(cond.timestep)) * cond.level
        noisy = alphas[cond.timestep].sqrt() * latent + (1 - alphas[cond.timestep]).sqrt() * eps
        for text, reading in ((TEXTS[1], readings.error), ("", readings.empty_error)):
            with torch.no_grad():
                out = tiny_parts.unet(noisy[None], torch.tensor([cond.timestep]), encoder_hidden_states=states[text]).sample
            direct = float(((out[0].double() - eps.double()) ** 2).sum())
            assert abs(float(reading[0, j]) - direct) <= 1e-4 * direct


def test_the_families_are_the_documented_formulas_of_the_same_readings(tiny_parts, sample_image):
    readings = make_scorer(tiny_parts).read_pairs([sample_image] * 3, TEXTS, SCORES)
    e, e0, a, d = readings.error, readings.empty_error, readings.attention, readings.elements
    assert d == int(np.prod(tiny_parts.unet.config.in_channels * tiny_parts.unet.config.sample_size ** 2))
    torch.testing.assert_close(readings.score("attention"), a)
    torch.testing.assert_close(readings.score("denoise"), (e0 - e) / d)
    torch.testing.assert_close(readings.score("discffusion"), a + e0.sqrt() - e.sqrt())
    # one image: its empty-prompt error is shared by every caption, so denoise ranks captions by their own error
    assert torch.equal(e0[0], e0[1]) and torch.equal(e0[0], e0[2])


@pytest.mark.parametrize("score", SCORES)
def test_score_pairs_is_the_mean_over_the_grid_of_the_configured_family(tiny_parts, sample_image, score):
    scorer = make_scorer(tiny_parts, score=score)
    direct = scorer.read_pairs([sample_image] * 2, TEXTS[:2], (score,)).score(score).mean(dim=1)
    np.testing.assert_allclose(scorer.score_pairs([sample_image] * 2, TEXTS[:2]), direct.double().numpy(), atol=1e-6)


def test_the_empty_prompt_runs_once_per_image_and_condition_whatever_the_number_of_texts(tiny_parts):
    scorer = make_scorer(tiny_parts, score="denoise")
    images = _images()
    conditions = len(scorer.conditions)
    scorer.score_pairs([images[0]] * 3 + [images[1]] * 3, TEXTS * 2)
    assert scorer.empty_passes == 2 * conditions
    assert scorer.unet_passes == 6 * conditions + 2 * conditions
    scorer.score_images(images, "a new query about both images")  # cached: no new empty-prompt pass
    assert scorer.empty_passes == 2 * conditions
    assert scorer.unet_passes == 8 * conditions + 2 * conditions


def test_attention_alone_runs_no_empty_prompt_pass_and_denoise_computes_no_attention(tiny_parts, sample_image):
    attention = make_scorer(tiny_parts, score="attention")
    attention.score_texts(sample_image, TEXTS)
    assert attention.empty_passes == 0 and attention.unet_passes == 3 * len(attention.conditions)
    readings = make_scorer(tiny_parts).read_pairs([sample_image], [TEXTS[0]], ("denoise",))
    assert readings.attention is None
    with pytest.raises(ValueError, match="attention term"):
        readings.score("discffusion")


def test_deltas_change_the_empty_prompt_error_so_applying_them_recomputes_it(tiny_parts, sample_image):
    from discff_cli.engine.deltas import attach_deltas, detach_deltas

    scorer = make_scorer(tiny_parts)
    before = scorer.read_pairs([sample_image], [TEXTS[0]], ("denoise",)).empty_error
    passes = scorer.empty_passes
    with torch.no_grad():
        for p in attach_deltas(scorer):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    try:
        after = scorer.read_pairs([sample_image], [TEXTS[0]], ("denoise",)).empty_error
        assert scorer.empty_passes == 2 * passes and not torch.allclose(before, after)
    finally:
        detach_deltas(scorer)
    again = scorer.read_pairs([sample_image], [TEXTS[0]], ("denoise",)).empty_error
    torch.testing.assert_close(again, before)
