"""Learned (timestep, level) weights: the fit prefers informative conditions, scoring applies them,
the deltas file carries them with or without prompt deltas, and another grid is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest_tune import one_thread  # noqa: F401
from discff_cli.engine.config import EngineConfig

pytestmark = pytest.mark.usefixtures("one_thread")
GRID = EngineConfig(steps=2, levels=(0.3, 0.7), device="cpu", batch_size=8)


def _margins(seed: int, n: int = 60) -> torch.Tensor:
    """Condition 0 says which image is right (+1 ± 0.2); conditions 1-3 are loud noise."""
    g = torch.Generator().manual_seed(seed)
    signal = 1 + 0.2 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return torch.cat([signal, 4 * torch.randn(n, 3, generator=g, dtype=torch.float64)], dim=1)


def test_the_fit_moves_weight_to_the_informative_condition_and_gains_held_out_accuracy():
    from training.tune.timestep_weights import fit_weights

    fit = fit_weights(_margins(0), _margins(1))
    assert fit.weights.mean().item() == pytest.approx(1.0, abs=1e-5) and (fit.weights > 0).all()
    assert fit.weights[0] > 2 * fit.weights[1:].max()
    assert fit.val_learned > fit.val_uniform + 0.15 and fit.val_learned >= 0.9


def test_weights_turn_the_mean_over_conditions_into_the_weighted_mean(tiny_parts, sample_image):
    from discff_cli.engine.scorer import Scorer

    scorer = Scorer(tiny_parts, GRID)
    texts = ["a red circle", "a blue square"]
    latents = scorer.encode_images([sample_image] * 2)
    states, mask = scorer.encode_texts(texts)
    per = scorer.read_conditions(latents, states, mask, families=["denoise"]).score("denoise")
    weights = torch.tensor([0.5, 1.5, 0.25, 1.75])
    scorer.condition_weights = {(c.timestep, c.level): float(w) for c, w in zip(scorer.conditions, weights)}
    got = np.asarray(scorer.rank([sample_image] * 2, texts, ["denoise"], prune=False).scores["denoise"])
    np.testing.assert_allclose(got, (per * weights).mean(dim=1).numpy(), rtol=1e-6)
    assert not np.allclose(got, per.mean(dim=1).numpy())


def test_a_weights_only_file_loads_without_deltas_and_refuses_another_grid(tiny_parts, tmp_path):
    from discff_cli.engine.deltas import apply_deltas_file, save_deltas_file
    from discff_cli.engine.scorer import Scorer
    from discff_cli.errors import DiscffError

    scorer = Scorer(tiny_parts, GRID)
    scorer.condition_weights = {(c.timestep, c.level): 0.5 + i / 2 for i, c in enumerate(scorer.conditions)}
    path = save_deltas_file(tmp_path / "w.safetensors", scorer, rank=0)
    fresh = Scorer(tiny_parts, GRID)
    meta = apply_deltas_file(fresh, path)
    assert meta["prompt_deltas"] is False and fresh.condition_weights == scorer.condition_weights
    assert all(proc.delta_k is None for proc in fresh.processors.values())
    with pytest.raises(DiscffError, match="--steps"):
        apply_deltas_file(Scorer(tiny_parts, EngineConfig(steps=3, levels=(0.3, 0.7), device="cpu")), path)


def test_no_prompt_deltas_without_timestep_weights_is_refused_before_loading(tmp_path):
    from conftest_index import run_cli

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "a.png", "text": "a red picture", "negative_texts": ["a blue picture"]}\n')
    result = run_cli("tune", pairs, "--model", tmp_path / "no-such-model", "--no-prompt-deltas")
    assert result.exit_code != 0 and "add --timestep-weights" in result.output and "Traceback" not in result.output
