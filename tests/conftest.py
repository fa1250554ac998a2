"""Shared fixtures: a tiny random-weight Stable Diffusion in diffusers format, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch a network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory):
    """An SD-2.1-base-shaped model (16 attn2 layers) with tiny widths, saved as real weights would be."""
    from training.demo_models.sd_configs import build_random_sd

    return build_random_sd(tmp_path_factory.mktemp("tiny-sd"), seed=0)


@pytest.fixture(scope="session")
def tiny_parts(tiny_sd_dir):
    from discff_cli.engine.models import load_sd

    return load_sd(str(tiny_sd_dir))


@pytest.fixture()
def sample_image(tmp_path):
    """A small real PNG on disk."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "image.png"
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(72, 64, 3) * 255).astype("uint8")).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    """A random-weight StableDiffusionXLPipeline saved with save_pretrained (training/demo_models/family_configs.py)."""
    from training.demo_models.family_configs import build_random_sdxl

    return build_random_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    """A random-weight StableDiffusion3Pipeline (no T5) saved with save_pretrained."""
    from training.demo_models.family_configs import build_random_sd3

    return build_random_sd3(tmp_path_factory.mktemp("tiny-sd3") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_sd3_t5_dir(tmp_path_factory):
    """The same, with a tiny T5 encoder and tokenizer as the third text encoder."""
    from training.demo_models.family_configs import build_random_sd3

    return build_random_sd3(tmp_path_factory.mktemp("tiny-sd3-t5") / "model", seed=0, t5=True)
