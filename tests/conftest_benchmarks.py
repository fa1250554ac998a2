"""Helpers for the benchmark-converter tests: small generated images and `discff eval` runs.

Each test builds a few rows in its benchmark's exact published layout (field names as the
loaders' docstrings cite them), so a converter that misreads the layout fails here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from discff_cli.cli import app

# Models that do not exist: an error about a row must come before any model is loaded.
NO_MODELS = ["--clip", "/nonexistent/clip", "--model", "/nonexistent/sd"]
DEMO_CLIP = ["--clip", "demo", "--no-diffusion", "--json"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Made images go to a per-test cache, never the user's ~/.cache (import this into each test module)."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def solid(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def gradient(path: Path, size: tuple[int, int] = (64, 48), exif_orientation: int | None = None) -> np.ndarray:
    """An image whose every pixel is distinct (x in red, y in green), so a crop identifies its box."""
    w, h = size
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    pixels = np.stack([xs * 3 % 256, ys * 5 % 256, (xs + ys) % 256], axis=-1).astype("uint8")
    img = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, exif=exif)
    else:
        img.save(path)
    return pixels


def run_eval(*args: str, cache: Path | None = None):
    env = {"XDG_CACHE_HOME": str(cache)} if cache else None
    return CliRunner().invoke(app, ["eval", *args], env=env)


def json_rows(result) -> dict:
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    return doc, {(r["tag"], r["metric"]): r for r in doc["rows"]}
