"""The Discffusion engine on a tiny SD-2.1-shaped model: Eq. 4, independence of pairs, seeded noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discff_cli.engine.config import SCORES, EngineConfig
from discff_cli.engine.processor import LSECrossAttnProcessor
from discff_cli.engine.scorer import Scorer

CAPTIONS = ["a red circle", "a blue square left of a green triangle", "two yellow circles", "a photo of a cat",
            "a green square", "a triangle above a circle", "red", "an empty gray scene", "a blue circle"]


def make_scorer(parts, **overrides) -> Scorer:
    config = EngineConfig(**{"steps": 2, "levels": (0.5,), "device": "cpu", **overrides})
    return Scorer(parts, config)


def test_loads_sd21_layout_and_hooks_exactly_the_16_cross_attention_layers(tiny_parts):
    scorer = make_scorer(tiny_parts)
    attn2 = [n for n, m in tiny_parts.unet.named_modules() if n.endswith("attn2")]
    attn1 = [m for n, m in tiny_parts.unet.named_modules() if n.endswith("attn1")]
    assert len(attn2) == 16 and len(scorer.processors) == 16
    kinds = [n.split(".")[0] for n in scorer.layer_names]
    assert kinds.count("down_blocks") == 6 and kinds.count("mid_block") == 1 and kinds.count("up_blocks") == 9
    assert all(isinstance(tiny_parts.unet.get_submodule(n).processor, LSECrossAttnProcessor) for n in attn2)
    assert not any(isinstance(m.processor, LSECrossAttnProcessor) for m in attn1)


@pytest.mark.parametrize("lse_lambda,score", [(1.0, "attention"), (4.0, "attention"), (1.0, "discffusion")])
def test_pooled_score_equals_brute_force_eq4_from_full_logits(tiny_parts, sample_image, lse_lambda, score):
    scorer = make_scorer(tiny_parts, lse_lambda=lse_lambda, score=score)
    layer = scorer.layer_names[3]
    attn = tiny_parts.unet.get_submodule(layer)
    captured = {}

    def grab(module, args, kwargs):  # the sink holds the last pass: discffusion's is the empty prompt's, pooled too
        captured["x"], captured["c"] = args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone()

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    latents = scorer.encode_images([sample_image])
    states, mask = scorer.encode_texts(["a red circle left of a blue square"])
    with torch.inference_mode():
        scorer.score_latents(latents, states, mask, conditions=scorer.conditions[:1])
    handle.remove()
    pooled = scorer.sink.pooled[layer][0].double()

    x, c = captured["x"][0].double(), captured["c"][0].double()  # [n, d_model], [m, d_text]
    heads = attn.heads
    q = x @ attn.to_q.weight.double().T
    k = c @ attn.to_k.weight.double().T
    d = q.shape[-1] // heads
    for h in range(heads):
        a = q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / np.sqrt(d)  # full map [n, m]
        rows = [np.log(np.sum(np.exp(lse_lambda * row))) / lse_lambda for row in a.numpy()]
        assert abs(float(np.mean(rows)) - float(pooled[h])) < 1e-5


@pytest.mark.parametrize("score", SCORES)
def test_a_pair_scores_the_same_alone_and_inside_a_batch_of_eight_others(tiny_parts, sample_image, score):
    from PIL import Image

    others = [Image.fromarray(np.full((64, 64, 3), 30 * i, dtype=np.uint8)) for i in range(8)]
    alone = make_scorer(tiny_parts, batch_size=1, score=score).rank([sample_image], [CAPTIONS[0]]).values
    batched = make_scorer(tiny_parts, batch_size=18, score=score).rank([sample_image, *others], CAPTIONS).values
    assert abs(alone[0] - batched[0]) < 1e-5


def _fed_noise(scorer: Scorer, images, texts):
    """The noise component of every sample the U-Net actually received, recovered per item."""
    fed = []
    hook = scorer.parts.unet.register_forward_pre_hook(
        lambda m, args, kwargs: fed.append((args[0].clone(), args[1].clone())), with_kwargs=True)
    scorer.rank(images, texts)
    hook.remove()
    latents = scorer.encode_images(images)
    alphas = scorer.parts.scheduler.alphas_cumprod
    items = [(p, c) for p in range(len(images)) for c in scorer.conditions]
    samples = torch.cat([s for s, _ in fed])
    timesteps = torch.cat([t for _, t in fed])
    noise = []
    for (p, cond), sample, t in zip(items, samples, timesteps):
        assert int(t) == cond.timestep
        a, b = alphas[cond.timestep].sqrt(), (1 - alphas[cond.timestep]).sqrt()
        noise.append((sample - a * latents[p]) / (b * cond.level))
    return torch.stack(noise).view(len(images), len(scorer.conditions), *samples.shape[1:])


@pytest.mark.parametrize("score", SCORES)
def test_every_candidate_gets_the_same_seeded_noise(tiny_parts, sample_image, score):
    from PIL import Image

    images = [sample_image, Image.new("RGB", (64, 64), (200, 10, 10)), Image.new("RGB", (90, 64), (10, 10, 200))]
    scorer = make_scorer(tiny_parts, steps=3, levels=(0.2, 0.8), batch_size=4, score=score)
    noise = _fed_noise(scorer, images, ["a red circle"] * 3)
    assert torch.allclose(noise[0], noise[1], atol=1e-4) and torch.allclose(noise[0], noise[2], atol=1e-4)
    # the two levels of one timestep use the same eps_t, different timesteps different ones
    assert torch.allclose(noise[0, 0], noise[0, 1], atol=1e-4)
    assert not torch.allclose(noise[0, 0], noise[0, 2], atol=1e-2)
    again = _fed_noise(make_scorer(tiny_parts, steps=3, levels=(0.2, 0.8), seed=0), images[:1], ["x"])
    other = _fed_noise(make_scorer(tiny_parts, steps=3, levels=(0.2, 0.8), seed=1), images[:1], ["x"])
    assert torch.allclose(again[0], noise[0], atol=1e-4)
    assert not torch.allclose(other[0], noise[0], atol=1e-2)


def test_same_seed_gives_identical_scores_and_another_seed_different_ones(tiny_parts, sample_image):
    first = make_scorer(tiny_parts, seed=7).rank([sample_image] * 3, CAPTIONS[:3]).values
    second = make_scorer(tiny_parts, seed=7).rank([sample_image] * 3, CAPTIONS[:3]).values
    third = make_scorer(tiny_parts, seed=8).rank([sample_image] * 3, CAPTIONS[:3]).values
    assert np.array_equal(first, second)
    assert not np.allclose(first, third, rtol=0, atol=1e-7)


def test_layer_selection_averages_only_the_chosen_layers(tiny_parts, sample_image):
    mid = make_scorer(tiny_parts, layers="mid", score="attention")
    assert mid.selected == ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    assert make_scorer(tiny_parts, layers="last-3").selected == make_scorer(tiny_parts).layer_names[-3:]
    assert make_scorer(tiny_parts, layers="down").selected == make_scorer(tiny_parts).layer_names[:6]
    assert not np.allclose(mid.rank([sample_image] * 2, CAPTIONS[:2]).values,
                           make_scorer(tiny_parts, score="attention").rank([sample_image] * 2, CAPTIONS[:2]).values)


def test_ref_layers_are_the_last_cross_attention_block_of_down_mid_and_up_as_in_the_authors_code(tiny_parts):
    assert make_scorer(tiny_parts, layers="ref").selected == [
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2", "down_blocks.2.attentions.1.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.3.attentions.0.transformer_blocks.0.attn2", "up_blocks.3.attentions.1.transformer_blocks.0.attn2",
        "up_blocks.3.attentions.2.transformer_blocks.0.attn2"]


def test_grid_is_the_ddim_schedule_times_the_levels(tiny_parts):
    scorer = make_scorer(tiny_parts, steps=10, levels=(0.2, 0.4, 0.6, 0.8))
    timesteps = sorted({c.timestep for c in scorer.conditions}, reverse=True)
    assert timesteps == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert len(scorer.conditions) == 40


def test_fingerprint_names_the_weights_not_their_dtype(tiny_sd_dir, tiny_parts):
    """Deltas tuned in fp32 on a CPU must be accepted by the same model loaded in bf16 on a GPU."""
    from discff_cli.engine.models import load_sd

    half = load_sd(str(tiny_sd_dir), dtype=torch.bfloat16)
    assert next(half.unet.parameters()).dtype == torch.bfloat16
    assert half.fingerprint == tiny_parts.fingerprint
