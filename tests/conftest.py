"""Shared fixtures: a tiny random-weight Stable Diffusion in diffusers format, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch a network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread for torch and FAISS (OpenMP) in the whole suite, and in what it spawns: the
# test models are tiny, and on a busy 2-core CI box two threads spin-wait on each other. Measured
# on test_explain.py + test_demo_clip_retrieval.py: 164 s with two threads, 38 s with one (the
# one_thread fixture of conftest_tune and faiss_single_thread of conftest_index did this per test).
# Set before torch or faiss is imported, so both read it; an OMP_NUM_THREADS already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])


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
