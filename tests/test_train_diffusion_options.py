"""train_diffusion's options for the composition retrain (issue 12), at a CPU-seconds scale.

One tiny run with every new option (frozen demo-CLIP text tower, two-object curriculum, extra
phrasings, caption dropout, the bundled VAE, a deadline) must save a model that the engine's
own loader (`discff_cli.engine.models.load_sd`) loads and scores with, as a GPU run's output will be.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest_tune import one_thread  # noqa: F401
from discff_cli.clip_resolve import DEMO_CLIP_DIR
from discff_cli.engine.models import DEMO_MODEL_DIR

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """20 U-Net steps, batch 16, tiny arch, frozen CLIP text: ~15 s on one busy CPU core."""
    from training.demo_models.train_diffusion import main

    root = tmp_path_factory.mktemp("train-diffusion")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["--out", str(root / "model"), "--results", str(root / "results"), "--device", "cpu", "--workers", "1",
              "--arch", "tiny", "--text-encoder", "clip", "--vae-from", str(DEMO_MODEL_DIR),
              "--n-train", "48", "--unet-steps", "20", "--unet-batch", "16", "--warmup", "5",
              "--two-object-weight", "0.8", "--curriculum-ramp", "0.5", "--extra-phrasings", "1",
              "--caption-dropout", "0.2", "--deadline", "600"])
    finally:
        torch.set_num_threads(before)
    return root


def test_tiny_run_saves_a_model_the_engine_loads_and_scores_with(tiny_run, one_thread):  # noqa: F811
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import Scorer
    from discff_cli.engine.models import load_sd
    from training.world import make_split

    parts = load_sd(str(tiny_run / "model"))
    assert parts.resolution == 64
    assert parts.unet.config.cross_attention_dim == parts.text_encoder.config.hidden_size == 64
    assert parts.tokenizer.model_max_length == parts.text_encoder.config.max_position_embeddings == 16
    ex = make_split("test", 2)
    scores = Scorer(parts, EngineConfig(steps=2, levels=(0.5,))).rank([ex[0].image] * 2, [ex[0].caption, ex[1].caption]).values
    assert scores.shape == (2,) and bool(torch.isfinite(torch.as_tensor(scores)).all())


def test_tiny_run_trains_and_records_what_it_did(tiny_run):
    summary = json.loads((tiny_run / "results" / "training_summary.json").read_text())
    hparams = json.loads((tiny_run / "results" / "hparams.json").read_text())
    assert summary["unet_steps"] == 20 and not summary["stopped_by_signal"]
    assert summary["unet_final_loss"] < 1.0  # from ~1.15 at step 1: the U-Net learned something
    assert hparams["train"]["text_encoder"] == "clip" and hparams["train"]["two_object_weight"] == 0.8
    assert summary["size"]["total_mb"] < 60


def test_saved_text_encoder_is_the_frozen_demo_clip_penultimate_layer(tiny_run):
    """What the U-Net was conditioned on is exactly open_clip's own states, before and after training."""
    from transformers import CLIPTextModel

    from training.demo_models.clip_text_export import max_abs_difference

    te = CLIPTextModel.from_pretrained(str(tiny_run / "model"), subfolder="text_encoder", torch_dtype=torch.float32)
    assert te.config.num_hidden_layers == 1  # the demo CLIP's text tower has 2 layers
    assert max_abs_difference(te, DEMO_CLIP_DIR, n_layers=1) < 1e-5


def test_export_refuses_a_tower_it_cannot_represent():
    from training.demo_models.clip_text_export import clip_text_config

    with pytest.raises(ValueError, match="no_causal_mask"):
        clip_text_config({"width": 64, "heads": 4, "layers": 2, "no_causal_mask": True})
    with pytest.raises(ValueError, match="penultimate"):
        clip_text_config({"width": 64, "heads": 4, "layers": 1}, "penultimate")


def test_curriculum_draws_the_asked_share_of_two_object_scenes():
    from training.demo_models.diffusion_model_configs import TrainConfig
    from training.demo_models.train_diffusion import SceneSampler, two_object_share
    from training.world import make_split

    scenes = [e.scene for e in make_split("train", 40)]
    sampler = SceneSampler(scenes, torch.device("cpu"))
    idx = sampler.draw(4000, 0.8, torch.Generator().manual_seed(0))
    share = sum(len(scenes[i].objects) == 2 for i in idx.tolist()) / len(idx)
    assert 0.77 < share < 0.83
    cfg = TrainConfig(two_object_weight=0.9, curriculum_ramp=0.5)
    assert [round(two_object_share(cfg, p), 3) for p in (0.0, 0.25, 0.5, 1.0)] == [0.5, 0.7, 0.9, 0.9]


def test_extra_phrasings_leave_the_test_split_and_its_negatives_alone():
    from training.world import captions, extra_captions, hard_negatives, make_split

    for ex in make_split("test", 60):
        assert ex.caption in captions(ex.scene)
        extra = set(extra_captions(ex.scene))
        assert extra and not extra & set(captions(ex.scene))
        negatives = {c for negs in hard_negatives(ex.scene).values() for c in negs}
        assert not extra & negatives


def test_sigterm_stops_training_cleanly_instead_of_killing_the_run():
    from training.demo_models.train_diffusion import StopFlag

    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.set
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


def test_attention_metric_credits_a_map_on_the_named_object_and_not_a_flat_one():
    import numpy as np

    from training.demo_models.attention_tokens import soft_masks, token_metrics
    from training.world import iter_split

    _, ex = next(iter_split("test", 1, 0, n_objects=2))
    masks = soft_masks(ex.scene)
    on_first = masks[0] / masks[0].sum()
    flat = np.full_like(on_first, 1 / on_first.size)
    focused, uniform = token_metrics(on_first, masks, own=0), token_metrics(flat, masks, own=0)
    assert focused["hit"] and focused["lift_own"] > 3 and focused["mass_own"] > 0.8  # soft mask edges keep it < 1
    assert abs(uniform["lift_own"] - 1) < 1e-6 and abs(uniform["lift_objects"] - 1) < 1e-6
    assert not token_metrics(on_first, masks, own=1)["hit"]


def test_attention_analysis_runs_through_the_engine_on_a_trained_model(tiny_run, tmp_path, one_thread):  # noqa: F811
    from training.demo_models.attention_tokens import analyse

    result = analyse(str(tiny_run / "model"), n=2, steps=1, levels=(0.5,), device="cpu", figure_rows=2, out=tmp_path)
    per_class = result["per_class"]
    assert {"sos", "colour", "shape", "relation", "eos", "padding"} <= set(per_class)
    assert per_class["colour"]["n_tokens"] == per_class["shape"]["n_tokens"] == 4
    assert 0 <= per_class["colour"]["all"]["hit"] <= 1
    # Every pixel's attention sums to 1 over the tokens, so the class shares add up to 1.
    total = sum(c["share"] * c["n_tokens"] for c in per_class.values()) / 2
    assert abs(total - 1) < 0.02
    assert (tmp_path / "attention_tokens.png").stat().st_size > 0
    assert (tmp_path / "attention_tokens.json").is_file()
