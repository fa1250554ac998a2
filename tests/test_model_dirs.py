"""Broken model directories (Stable Diffusion and OpenCLIP): one sentence naming the file, no traceback;
missing weights say what to fetch with today's CLI, where to put it, and that `demo` works offline."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest_index import build, run_cli, tiny_clip_dir, write_images  # noqa: F401

FAST = ["--steps", "2", "--levels", "0.5", "--device", "cpu"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _random(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _one_sentence(result, *fragments):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


SD_DAMAGE = {
    "unet weights truncated": ("unet/diffusion_pytorch_model.safetensors", _truncate, "truncated"),
    "vae weights random": ("vae/diffusion_pytorch_model.safetensors", _random, "not a safetensors"),
    "text encoder weights missing": ("text_encoder/model.safetensors", lambda p: p.unlink(), "missing"),
    "unet config not json": ("unet/config.json", lambda p: p.write_text("{not json"), "not valid JSON"),
    "scheduler config a list": ("scheduler/scheduler_config.json", lambda p: p.write_text("[1]"), "JSON object"),
}


@pytest.mark.parametrize("case", list(SD_DAMAGE))
def test_broken_stable_diffusion_dir_is_one_sentence_naming_the_file(case, tiny_sd_dir, sample_image, tmp_path):
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir, model)
    rel, damage, why = SD_DAMAGE[case]
    damage(model / rel)
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    result = run_cli("score", sample_image, captions, "--model", model, *FAST)
    _one_sentence(result, rel.split("/")[0], why)


def test_a_part_that_fails_inside_the_library_is_named(tiny_sd_dir, sample_image, tmp_path):
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir, model)
    config = json.loads((model / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 7  # valid JSON, whole weights, shapes that do not fit
    (model / "unet" / "config.json").write_text(json.dumps(config))
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    _one_sentence(run_cli("score", sample_image, captions, "--model", model, *FAST), "'unet' part", "broken")


CLIP_DAMAGE = {
    "weights truncated": ("open_clip_model.safetensors", _truncate, "truncated"),
    "weights random": ("open_clip_model.safetensors", _random, "not a safetensors"),
    "weights missing": ("open_clip_model.safetensors", lambda p: p.unlink(), "missing"),
    "config not json": ("open_clip_config.json", lambda p: p.write_bytes(b"\xff\xfe"), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CLIP_DAMAGE))
def test_broken_open_clip_dir_is_one_sentence_naming_the_file(case, tiny_clip_dir, tmp_path):
    clip = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, clip)
    name, damage, why = CLIP_DAMAGE[case]
    if not (clip / name).exists() and name.endswith(".safetensors"):
        pytest.skip("this tiny CLIP stores its weights under another name")
    damage(clip / name)
    write_images(tmp_path / "images", 2)
    result, _ = build(tmp_path / "images", tmp_path / "idx", clip)
    _one_sentence(result, name, why)


def test_missing_weights_hint_names_hf_download_the_cache_and_demo(monkeypatch):
    from discff_cli.errors import MissingModelError
    from discff_cli.engine.models import load_sd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingModelError) as info:
        load_sd("someone/not-cached-model")
    message = str(info.value)
    assert "`hf download someone/not-cached-model`" in message and "huggingface-cli" not in message
    assert "models--someone--not-cached-model" in message and "--model demo" in message


def test_missing_clip_hint_names_hf_download_and_clip_demo(monkeypatch):
    from index.clip_model import load_clip
    from index.errors import ModelUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(ModelUnavailable) as info:
        load_clip("ViT-B-32/laion2b_s34b_b79k", "cpu")
    message = str(info.value)
    assert "hf download" in message and "models--" in message and "--clip demo" in message
    assert os.linesep not in message
