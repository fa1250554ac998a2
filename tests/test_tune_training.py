"""The tuning loop: only p^k, p^v learn, Eq. 7 head weighting, resume continues exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest_tune import colour_pairs, fast_config, one_thread  # noqa: F401
from discff_cli.engine.processor import lse_pool
from discff_cli.engine.scorer import Scorer
from discff_cli.engine.deltas import detach_deltas, read_deltas_file
from training.tune.head_weighting import head_attribution, weights_from_importance
from training.tune import TuneConfig, Tuner, checkpoint_path


def base_parameters(parts) -> dict[str, torch.nn.Parameter]:
    named = {}
    for prefix, module in (("unet", parts.unet), ("text_encoder", parts.text_encoder), ("vae", parts.vae)):
        for name, p in module.named_parameters():
            if ".delta_k." not in name and ".delta_v." not in name:
                named[f"{prefix}.{name}"] = p
    return named


@pytest.mark.parametrize("score", ["attention", "denoise"])
def test_gradients_reach_only_the_deltas_and_base_weights_stay_bit_identical(tiny_parts, colour_pairs, tmp_path,
                                                                            score):
    from dataclasses import replace

    before = {k: p.detach().clone() for k, p in base_parameters(tiny_parts).items()}
    scorer = Scorer(tiny_parts, replace(fast_config(), score=score))
    config = TuneConfig(epochs=1, batch_size=4, lr=1e-2, val_fraction=0.0)
    tuner = Tuner(scorer, colour_pairs, tmp_path / "d.safetensors", config)
    for index, batch in enumerate(tuner.epoch_batches(0)[:2]):
        tuner.step(0, index, batch)
    try:
        procs = [scorer.processors[n] for n in scorer.layer_names]
        assert all(p.delta_k.weight.grad is not None for p in procs)
        assert all(p.delta_v.weight.grad is not None for p in procs[:-1])
        # The attention term: p^v of the last layer acts after the last attention map, so it cannot change
        # the score. The denoising term reads the U-Net's output, which it does change.
        assert (procs[-1].delta_v.weight.grad is None) == (score == "attention")
        assert any(float(p.detach().abs().max()) > 0 for p in tuner.params)  # the deltas did move
        for name, p in base_parameters(tiny_parts).items():
            assert p.grad is None, name
            assert not p.requires_grad, name
            assert torch.equal(p.detach(), before[name]), name
        trainable = {id(p) for p in tuner.params}
        assert all(id(p) in trainable for p in tiny_parts.unet.parameters() if p.requires_grad)
    finally:
        detach_deltas(scorer)


def test_eq7_attribution_and_head_weights_on_a_hand_built_attention_map():
    # One item, two heads, n=2 image tokens, m=2 text tokens. Head 0 prefers the positive text,
    # head 1 (wrongly) the negative one.
    pos = torch.tensor([[[[2.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.5]]]], requires_grad=True)
    neg = torch.tensor([[[[0.0, 0.0], [0.0, 0.5]], [[2.0, 0.0], [1.0, 0.0]]]], requires_grad=True)

    def score(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (lse_pool(a, 1.0)[0] * w).sum() / w.sum()

    uniform = torch.ones(2)
    loss = torch.relu(score(neg, uniform) - score(pos, uniform) + 0.2)
    loss.backward()
    attribution = -(head_attribution(pos.detach(), pos.grad) + head_attribution(neg.detach(), neg.grad))

    # By hand: dL/dA_h = ∓ (1/H) softmax(A_h rows) / n, so Σ A ⊙ dL/dA is the attention-weighted mean logit.
    def weighted_mean_logit(rows):
        return np.mean([sum(math.exp(x) / sum(math.exp(y) for y in row) * x for x in row) for row in rows]) / 2

    expected = [weighted_mean_logit([[2, 0], [1, 0]]) - weighted_mean_logit([[0, 0], [0, 0.5]]),
                weighted_mean_logit([[0, 0], [0, 0.5]]) - weighted_mean_logit([[2, 0], [1, 0]])]
    assert torch.allclose(attribution, torch.tensor(expected, dtype=torch.float32), atol=1e-6)

    weights = weights_from_importance(attribution)
    assert weights[0] > 1.0 > weights[1] > 0.0 and abs(float(weights.mean()) - 1.0) < 1e-6
    margin = lambda w: float((score(pos, w) - score(neg, w)).detach())  # noqa: E731
    assert margin(weights) > margin(uniform)  # weighting towards the discriminative head widens the margin


def test_scorer_uses_saved_head_weights_as_a_weighted_mean_over_heads(tiny_parts, sample_image):
    scorer = Scorer(tiny_parts, fast_config(steps=1, score="attention"))  # head weights weigh the attention term
    latents = scorer.encode_images([sample_image])
    states, mask = scorer.encode_texts(["a red circle"])
    with torch.inference_mode():
        uniform = float(scorer.score_latents(latents, states, mask))
        pooled = {k: v[0].clone() for k, v in scorer.sink.pooled.items()}
        layer = scorer.selected[5]
        heads = pooled[layer].shape[0]
        scorer.head_weights[layer] = torch.arange(1, heads + 1, dtype=torch.float32)
        weighted = float(scorer.score_latents(latents, states, mask))
    scorer.head_weights.clear()
    w = torch.arange(1, heads + 1, dtype=torch.float32)
    per_layer = [pooled[n].mean() if n != layer else (pooled[n] * w).sum() / w.sum() for n in scorer.selected]
    assert abs(weighted - float(torch.stack(per_layer).mean())) < 1e-5
    assert abs(weighted - uniform) > 1e-7


def test_tuning_learns_head_weights_for_every_scored_layer(tiny_parts, colour_pairs, tmp_path):
    scorer = Scorer(tiny_parts, fast_config())
    tuner = Tuner(scorer, colour_pairs, tmp_path / "d.safetensors",
                  TuneConfig(epochs=1, batch_size=4, lr=1e-2, val_fraction=0.0))
    try:
        tuner.run()
    finally:
        detach_deltas(scorer)
    tensors, meta = read_deltas_file(tmp_path / "d.safetensors")
    heads = {k for k in tensors if k.startswith("head_weights.")}
    assert heads == {f"head_weights.{n}" for n in scorer.selected}
    assert any(not torch.allclose(tensors[k], torch.ones_like(tensors[k])) for k in heads)
    assert all(float(tensors[k].min()) > 0 for k in heads)
    assert meta["base_model"] == tiny_parts.name and meta["fingerprint"] == tiny_parts.fingerprint
    assert meta["layers"] == scorer.layer_names and meta["tune_config"]["margin"] == 0.2


def test_an_interrupted_run_resumed_ends_exactly_where_an_uninterrupted_run_ends(tiny_parts, colour_pairs, tmp_path):
    config = TuneConfig(epochs=2, batch_size=4, lr=1e-2, val_fraction=0.25, checkpoint_every=100)

    def run(out, stop_after=None, resume=False):
        scorer = Scorer(tiny_parts, fast_config())
        tuner = Tuner(scorer, colour_pairs, out, config)
        if resume:
            tuner.load_checkpoint()
        try:
            return tuner.run(stop_after=stop_after)
        finally:
            detach_deltas(scorer)

    straight = run(tmp_path / "straight.safetensors")
    first = run(tmp_path / "resumed.safetensors", stop_after=3)  # mid-epoch 2 (2 steps per epoch)
    assert first.interrupted and checkpoint_path(tmp_path / "resumed.safetensors").is_file()
    assert not (tmp_path / "resumed.safetensors").exists()
    second = run(tmp_path / "resumed.safetensors", resume=True)
    assert not second.interrupted and not checkpoint_path(tmp_path / "resumed.safetensors").exists()
    a, meta_a = read_deltas_file(tmp_path / "straight.safetensors")
    b, meta_b = read_deltas_file(tmp_path / "resumed.safetensors")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [p["epoch"] for p in meta_b["curve"]] == [0, 1, 2]
    assert np.allclose([p["train_loss"] or 0 for p in meta_a["curve"]], [p["train_loss"] or 0 for p in meta_b["curve"]])


@pytest.fixture(autouse=True)
def _fast(one_thread):  # noqa: F811
    yield


def test_the_margin_is_measured_in_units_of_the_scores_zero_shot_spread():
    """A per-element MSE gap (~1e-4) and an Eq. 4 logit gap (~1) get the same loss for the same
    relative separation: gaps are divided by the spread measured before the first step."""
    import torch

    from training.tune import Spread, triplet_loss

    spread = Spread(timesteps=(100, 900), per_timestep=(1e-4, 3e-4), mean=2e-4)
    assert abs(spread.at(500) - 2e-4) < 1e-12 and spread.at(100) == 1e-4 and spread.at(2000) == 3e-4
    pos, neg = torch.tensor([0.0]), torch.tensor([1e-4])
    small = triplet_loss(pos, neg, 0.2, spread.at(100))
    assert torch.isclose(small, triplet_loss(pos * 1e4, neg * 1e4, 0.2, 1.0))
    assert torch.isclose(small, torch.tensor(1.2))
    assert Spread.from_dict(spread.to_dict()) == spread
