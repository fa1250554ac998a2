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


def read(scorer: Scorer, images, texts, families):
    """The per-condition readings of pair i = (images[i], texts[i]) (the tensor layer under Scorer.rank)."""
    states, mask = scorer.encode_texts(texts)
    with torch.inference_mode():
        return scorer.read_conditions(scorer.encode_images(images), states, mask, None, families)


def _images():
    return [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (70, 64), (20, 40, 210))]


def test_denoising_error_equals_a_direct_computation_from_the_unet_output(tiny_parts, sample_image):
    scorer = make_scorer(tiny_parts)
    readings = read(scorer, [sample_image], [TEXTS[1]], ("denoise",))
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
    readings = read(make_scorer(tiny_parts), [sample_image] * 3, TEXTS, SCORES)
    e, e0, a, d = readings.error, readings.empty_error, readings.attention, readings.elements
    assert d == int(np.prod(tiny_parts.unet.config.in_channels * tiny_parts.unet.config.sample_size ** 2))
    torch.testing.assert_close(readings.score("attention"), a)
    torch.testing.assert_close(readings.score("denoise"), (e0 - e) / d)
    a0 = readings.empty_attention
    torch.testing.assert_close(readings.score("diffusion_itm"), e0.sqrt() - e.sqrt())
    torch.testing.assert_close(readings.score("discffusion"), 0.5 * (a + a0) + e0.sqrt() - e.sqrt())
    assert not torch.allclose(a, a0)  # the empty prompt's attention term is a reading of its own
    # one image: its empty-prompt error is shared by every caption, so denoise ranks captions by their own error
    assert torch.equal(e0[0], e0[1]) and torch.equal(e0[0], e0[2])


@pytest.mark.parametrize("score", SCORES)
def test_score_pairs_is_the_mean_over_the_grid_of_the_configured_family(tiny_parts, sample_image, score):
    scorer = make_scorer(tiny_parts, score=score)
    direct = read(scorer, [sample_image] * 2, TEXTS[:2], (score,)).score(score).mean(dim=1)
    np.testing.assert_allclose(scorer.rank([sample_image] * 2, TEXTS[:2]).values, direct.double().numpy(), atol=1e-6)


def test_the_empty_prompt_runs_once_per_image_and_condition_whatever_the_number_of_texts(tiny_parts):
    scorer = make_scorer(tiny_parts, score="denoise")
    images = _images()
    conditions = len(scorer.conditions)
    scorer.rank([images[0]] * 3 + [images[1]] * 3, TEXTS * 2)
    assert scorer.empty_passes == 2 * conditions
    assert scorer.unet_passes == 6 * conditions + 2 * conditions
    scorer.rank(images, ["a new query about both images"] * 2)  # cached: no new empty-prompt pass
    assert scorer.empty_passes == 2 * conditions
    assert scorer.unet_passes == 8 * conditions + 2 * conditions


def test_attention_alone_runs_no_empty_prompt_pass_and_denoise_computes_no_attention(tiny_parts, sample_image):
    attention = make_scorer(tiny_parts, score="attention")
    attention.rank([sample_image] * 3, TEXTS)
    assert attention.empty_passes == 0 and attention.unet_passes == 3 * len(attention.conditions)
    readings = read(make_scorer(tiny_parts), [sample_image], [TEXTS[0]], ("denoise",))
    assert readings.attention is None
    with pytest.raises(ValueError, match="attention term"):
        readings.score("discffusion")


def test_deltas_change_the_empty_prompt_error_so_applying_them_recomputes_it(tiny_parts, sample_image):
    from discff_cli.engine.deltas import attach_deltas, detach_deltas

    scorer = make_scorer(tiny_parts)
    before = read(scorer, [sample_image], [TEXTS[0]], ("denoise",)).empty_error
    passes = scorer.empty_passes
    with torch.no_grad():
        for p in attach_deltas(scorer):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    try:
        after = read(scorer, [sample_image], [TEXTS[0]], ("denoise",)).empty_error
        assert scorer.empty_passes == 2 * passes and not torch.allclose(before, after)
    finally:
        detach_deltas(scorer)
    again = read(scorer, [sample_image], [TEXTS[0]], ("denoise",)).empty_error
    torch.testing.assert_close(again, before)


class _LogitStore:
    """Explicit attention that keeps every cross-attention layer's logits: the reference computation."""

    def __init__(self) -> None:
        self.logits: dict[str, torch.Tensor] = {}

    def processor(self, name: str):
        store = self

        class Explicit:
            def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
                residual, ndim = hidden_states, hidden_states.ndim
                if ndim == 4:
                    b, c, h, w = hidden_states.shape
                    hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
                context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
                q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
                batch, d = q.shape[0], k.shape[-1] // attn.heads
                q, k, v = (x.view(batch, -1, attn.heads, d).transpose(1, 2) for x in (q, k, v))
                logits = q @ k.transpose(-1, -2) * attn.scale
                if encoder_hidden_states is not None:
                    store.logits[name] = logits
                out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, attn.heads * d)
                out = attn.to_out[1](attn.to_out[0](out))
                if ndim == 4:
                    out = out.transpose(-1, -2).reshape(b, c, h, w)
                return (out + residual if attn.residual_connection else out) / attn.rescale_output_factor

        return Explicit()


def _authors_way(scorer: Scorer, image, text: str) -> dict[str, float]:
    """Every family of one pair computed straight from U-Net outputs on the batch [∅; y], the way the
    authors' pipeline runs it: their ascore is the LSE mean over that whole batch (so ½(A_y + A_∅)),
    their bias and DiffusionITM's distance are plain L2 norms of ε − ε̂."""
    parts, unet = scorer.parts, scorer.parts.unet
    saved = dict(unet.attn_processors)
    store = _LogitStore()
    unet.set_attn_processor({key: store.processor(key.rsplit(".processor", 1)[0]) for key in saved})
    try:
        latent = scorer.encode_images([image])[0]
        ids = parts.tokenizer(["", text], padding="max_length", max_length=parts.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
        alphas = parts.scheduler.alphas_cumprod
        values: dict[str, list[float]] = {f: [] for f in SCORES}
        with torch.no_grad():
            context = parts.text_encoder(ids)[0]
            for cond in scorer.conditions:
                eps = scorer.noise_for(cond.timestep) * cond.level
                noisy = alphas[cond.timestep].sqrt() * latent + (1 - alphas[cond.timestep]).sqrt() * eps
                out = unet(torch.stack([noisy, noisy]), torch.tensor([cond.timestep] * 2),
                           encoder_hidden_states=context).sample.double()
                lse = {name: torch.logsumexp(store.logits[name].double(), dim=-1) for name in scorer.selected}
                a_batch = float(torch.stack([v.mean() for v in lse.values()]).mean())      # theirs: .mean() over [∅; y]
                a_text = float(torch.stack([v[1].mean() for v in lse.values()]).mean())    # A(x, y) alone
                err_empty, err_text = ((out - eps.double()) ** 2).flatten(1).sum(dim=1)
                gap = float(torch.norm((eps.double() - out[0]).flatten()) - torch.norm((eps.double() - out[1]).flatten()))
                values["attention"].append(a_text)
                values["denoise"].append(float(err_empty - err_text) / latent.numel())
                values["diffusion_itm"].append(gap)
                values["discffusion"].append(a_batch + gap)
    finally:
        unet.set_attn_processor(saved)
    return {f: float(np.mean(v)) for f, v in values.items()}


def test_every_family_equals_a_direct_computation_from_unet_outputs_on_the_authors_batch(tiny_parts, sample_image):
    scorer = make_scorer(tiny_parts)
    ranking = scorer.rank([sample_image], [TEXTS[1]], SCORES)
    direct = _authors_way(make_scorer(tiny_parts), sample_image, TEXTS[1])
    for family in SCORES:
        assert abs(float(ranking.scores[family][0]) - direct[family]) <= 1e-5 * max(1.0, abs(direct[family])), family


def test_discffusion_of_a_pair_alone_equals_the_same_pair_among_many_captions(tiny_parts, sample_image):
    many = [TEXTS[1], "a red circle", "two yellow circles", "a green square", "!", "a cat on a mat"]
    alone = make_scorer(tiny_parts, batch_size=1).rank([sample_image], many[:1], SCORES)
    batch = make_scorer(tiny_parts, batch_size=16).rank([sample_image] * len(many), many, SCORES)
    for family in SCORES:
        assert abs(float(alone.scores[family][0]) - float(batch.scores[family][0])) < 1e-5, family
    # the ½ A(x, ∅) half is the image's own, never a mix of the batch's captions: every caption shares it
    half_empty = batch.scores["discffusion"] - batch.scores["diffusion_itm"] - 0.5 * batch.scores["attention"]
    np.testing.assert_allclose(half_empty, half_empty[0], atol=1e-5)
    assert abs(float(half_empty[0])) > 1e-3  # and it is there: discffusion is not attention/2 + the gap
