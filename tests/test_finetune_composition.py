"""The CPU composition fine-tune resumes exactly: a run killed after a checkpoint loses nothing."""

from __future__ import annotations

import torch

from training.demo_models.finetune_composition import BUNDLED, CompositionConfig, Data, Run, pick_pair, train_step
from training.world import captions, hard_negatives, make_split


def _tiny(tmp_path):
    cfg = CompositionConfig(n_train=24, batch=4)
    run = Run(cfg, BUNDLED, tmp_path, torch.device("cpu"))
    return cfg, run, Data(cfg, run, workers=1, log=lambda m: None)


def test_a_resumed_run_takes_the_same_next_step_as_an_uninterrupted_one(tmp_path):
    cfg, run, data = _tiny(tmp_path)
    train_step(run, data, cfg)
    run.step += 1
    run.save()
    after_uninterrupted = train_step(run, data, cfg)
    uninterrupted = [p.detach().clone() for p in run.params]

    cfg2 = CompositionConfig(n_train=24, batch=4)
    resumed = Run(cfg2, BUNDLED, tmp_path, torch.device("cpu"))
    assert resumed.load() and resumed.step == 1
    after_resume = train_step(resumed, Data(cfg2, resumed, workers=1, log=lambda m: None), cfg2)
    assert after_resume["loss"] == after_uninterrupted["loss"]
    for a, b in zip(uninterrupted, resumed.params):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    cfg, run, _ = _tiny(tmp_path)
    run.save()
    other = Run(CompositionConfig(n_train=24, batch=4, hn_margin=0.5), BUNDLED, tmp_path, torch.device("cpu"))
    try:
        other.load()
    except SystemExit as exc:
        assert "another configuration" in str(exc)
    else:
        raise AssertionError("a checkpoint made with another configuration was loaded")


def test_negatives_are_the_worlds_aligned_hard_negatives():
    import random

    cfg = CompositionConfig(perpendicular=0.0)
    rng = random.Random(0)
    scene = next(ex.scene for ex in make_split("train", 20) if len(ex.scene.objects) == 2)
    for _ in range(30):
        true, false, tag = pick_pair(scene, rng, cfg)
        j = captions(scene).index(true)
        assert false == hard_negatives(scene)[tag][j]
