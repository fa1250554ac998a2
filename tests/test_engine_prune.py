"""--prune (successive halving): fewer U-Net passes, the same clear winner, deterministic; CLI flag wired."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discff_cli.engine.config import SCORES, EngineConfig
from discff_cli.engine.prune import ordered_conditions, spread_order
from discff_cli.engine.scorer import Scorer


TEXTS = ["a blue circle above a yellow triangle", "a yellow circle above a blue triangle", "a photo of a cat",
         "an empty gray scene", "!"]


@pytest.fixture(scope="module")
def demo_parts():
    from discff_cli.engine.models import DEMO_MODEL_DIR, load_sd

    if not (DEMO_MODEL_DIR / "unet").is_dir():
        pytest.skip("the bundled demo model is not in this checkout")
    return load_sd("demo")


def _scorer(parts, prune: bool, score: str = "attention") -> Scorer:
    return Scorer(parts, EngineConfig(steps=4, levels=(0.3, 0.7), device="cpu", batch_size=64, prune=prune,
                                      score=score))


def _image():
    from training import world

    _, example = next(iter(world.iter_split("test", 1, 0, n_objects=2)))
    return example.image


def test_spread_order_covers_the_grid_once_and_spreads_the_first_timesteps():
    order = spread_order(10, 4)
    assert sorted(order) == [(s, l) for s in range(10) for l in range(4)]
    first = sorted(s for s, _ in order[:5])
    assert first[0] == 0 and first[-1] == 9  # both ends of the schedule in the coarsest round


@pytest.mark.parametrize("score", SCORES)
def test_prune_uses_fewer_passes_and_keeps_the_clear_winner(demo_parts, score):
    image = _image()
    texts = TEXTS if score == "attention" else [TEXTS[0], *TEXTS[2:]]  # the swap is no clear loss everywhere
    full = _scorer(demo_parts, prune=False, score=score)
    latents = full.encode_images([image] * len(texts))
    states, mask = full.encode_texts(texts)
    with torch.inference_mode():
        per_condition = full.score_conditions(latents, states, mask)
    top = int(per_condition.mean(dim=1).argmax())
    others = [i for i in range(len(texts)) if i != top]
    assert bool((per_condition[top] > per_condition[others]).all())  # hand-made: it wins under every condition
    pruned = _scorer(demo_parts, prune=True, score=score)
    ranking = pruned.rank([image] * len(texts), texts)
    assert int(np.argmax(ranking.values)) == top
    text_passes = ranking.unet_passes - ranking.empty_prompt_passes
    assert text_passes < 0.7 * len(texts) * len(full.conditions) == 0.7 * ranking.full_passes
    assert ranking.prune[score].passes == text_passes
    assert ranking.empty_prompt_passes <= len(full.conditions)  # one image: at most one empty-prompt pass per condition
    again = _scorer(demo_parts, prune=True, score=score).rank([image] * len(texts), texts)
    assert np.array_equal(again.values, ranking.values) and again.unet_passes == ranking.unet_passes


@pytest.mark.parametrize("score", SCORES)
def test_pruned_survivor_scores_equal_full_scores_on_the_grid_they_saw(tiny_parts, score):
    from PIL import Image

    images = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))]
    pruned = _scorer(tiny_parts, prune=True, score=score)
    ranking = pruned.rank(images, ["x", "x"])
    scores, rounds = ranking.values, ranking.prune[score].rounds
    seen = ordered_conditions(pruned.conditions)[:rounds[-1][1]]
    full = _scorer(tiny_parts, prune=False, score=score)
    latents = full.encode_images(images)
    states, mask = full.encode_texts(["x", "x"])
    with torch.inference_mode():
        per_cond = full.score_conditions(latents, states, mask, seen).mean(dim=1)
    winner = int(np.argmax(scores))
    assert abs(float(per_cond[winner]) - scores[winner]) < 1e-5


def test_prune_flag_reaches_the_engine_config():
    import click

    from discff_cli.options import engine_options, pop_engine_config

    seen = {}

    @click.command()
    @engine_options()
    def cmd(model, **kwargs):
        seen["config"] = pop_engine_config(kwargs)

    from click.testing import CliRunner

    assert CliRunner().invoke(cmd, ["--prune"]).exit_code == 0 and seen["config"].prune is True
    assert CliRunner().invoke(cmd, []).exit_code == 0 and seen["config"].prune is False
