"""Prompt deltas: zero deltas are the base model, files round-trip exactly, foreign files are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest_tune import FAST_CLI, fast_config, one_thread  # noqa: F401
from discff_cli.cli import app
from discff_cli.engine.scorer import Scorer, load_scorer
from discff_cli.engine.deltas import FullDelta, LowRankDelta, attach_deltas, detach_deltas, save_deltas_file

TEXTS = ["a red circle", "a blue square left of a green triangle", "two yellow circles"]


def scores(scorer: Scorer, image) -> np.ndarray:
    return scorer.rank([image] * len(TEXTS), TEXTS).values


@pytest.mark.parametrize("rank", [0, 2])
def test_zero_initialised_deltas_give_exactly_the_base_models_scores(tiny_parts, sample_image, rank):
    scorer = Scorer(tiny_parts, fast_config())
    base = scores(scorer, sample_image)
    params = attach_deltas(scorer, rank=rank)
    kind = LowRankDelta if rank else FullDelta
    assert all(isinstance(p.delta_k, kind) and isinstance(p.delta_v, kind) for p in scorer.processors.values())
    assert len(params) == 16 * 2 * (2 if rank else 1)
    assert np.array_equal(scores(scorer, sample_image), base)
    detach_deltas(scorer)


def _perturb(scorer: Scorer) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for proc in scorer.processors.values():
            for delta in (proc.delta_k, proc.delta_v):
                for p in delta.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    layer = scorer.selected[0]
    heads = scorer.sink.pooled[layer].shape[1] if scorer.sink.pooled else 2
    scorer.head_weights[layer] = torch.linspace(0.5, 1.5, heads)


@pytest.mark.parametrize("rank", [0, 2])
def test_saved_then_loaded_deltas_give_identical_scores_through_load_scorer(tiny_sd_dir, sample_image, tmp_path, rank):
    config = fast_config()
    tuned = load_scorer(str(tiny_sd_dir), config)
    base = scores(tuned, sample_image)
    attach_deltas(tuned, rank=rank)
    _perturb(tuned)
    expected = scores(tuned, sample_image)
    assert not np.allclose(expected, base)  # the deltas matter, so equality below means something
    path = save_deltas_file(tmp_path / "d.safetensors", tuned, rank)

    loaded = load_scorer(str(tiny_sd_dir), config, deltas=str(path))
    assert np.array_equal(scores(loaded, sample_image), expected)
    assert set(loaded.head_weights) == set(tuned.head_weights)


def test_query_and_output_deltas_change_the_score_and_round_trip_through_the_file(tiny_sd_dir, sample_image,
                                                                                  tmp_path):
    """`tune --deltas-on qkvo`: the q and o deltas start at zero (the base model), act on the score
    once moved, and are restored exactly from the file they are saved in."""
    config = fast_config()
    tuned = load_scorer(str(tiny_sd_dir), config)
    base = scores(tuned, sample_image)
    params = attach_deltas(tuned, slots=("delta_q", "delta_k", "delta_v", "delta_o"))
    assert len(params) == 16 * 4
    assert np.array_equal(scores(tuned, sample_image), base)
    with torch.no_grad():
        for proc in tuned.processors.values():
            proc.delta_q.weight.add_(0.05)
            proc.delta_o.weight.add_(0.05)
    expected = scores(tuned, sample_image)
    assert not np.allclose(expected, base)  # q and o alone (k and v still zero) move the scores
    path = save_deltas_file(tmp_path / "d.safetensors", tuned, 0)
    loaded = load_scorer(str(tiny_sd_dir), config, deltas=str(path))
    assert all(p.delta_q is not None and p.delta_o is not None for p in loaded.processors.values())
    assert np.array_equal(scores(loaded, sample_image), expected)


def test_deltas_made_for_another_base_model_are_refused_with_one_sentence(tiny_sd_dir, sample_image, tmp_path):
    from training.demo_models.sd_configs import build_random_sd

    scorer = load_scorer(str(tiny_sd_dir), fast_config())
    attach_deltas(scorer)
    path = save_deltas_file(tmp_path / "d.safetensors", scorer, 0)
    other = build_random_sd(tmp_path / "other-sd", seed=1)  # same shapes, other weights
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(TEXTS))
    result = CliRunner().invoke(app, ["score", str(sample_image), str(captions), "--model", str(other),
                                      "--deltas", str(path), *FAST_CLI])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("Error: Deltas") and "were made for base model" in message
    assert "Traceback" not in result.output and len(message.splitlines()) == 1


def test_a_file_that_is_not_deltas_is_a_clear_error(tiny_sd_dir, sample_image, tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file at all")
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\n")
    result = CliRunner().invoke(app, ["score", str(sample_image), str(captions), "--model", str(tiny_sd_dir),
                                      "--deltas", str(bogus), *FAST_CLI])
    assert result.exit_code == 1 and "is not a deltas file made by `discff tune`" in result.output


@pytest.fixture(autouse=True)
def _fast(one_thread):  # noqa: F811
    yield
