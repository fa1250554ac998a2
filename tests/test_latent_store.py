"""`index build --latents`: stored VAE latents make `search --rerank` skip the VAE, with the same scores."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from discff_cli.cli import app

FAST = ["--steps", "2", "--levels", "0.5", "--device", "cpu"]


def _gallery(folder, count=6):
    folder.mkdir()
    for i in range(count):
        Image.fromarray(np.full((64, 64, 3), (40 * i, 255 - 30 * i, 90), dtype=np.uint8)).save(folder / f"{i}.png")


def _search(index, extra=()):
    result = CliRunner().invoke(app, ["search", "a red circle", "--index", str(index), "--rerank", "4", "--json",
                                      *FAST, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


def test_stored_latents_give_identical_rerank_without_vae(tmp_path, tiny_sd_dir, monkeypatch):
    _gallery(tmp_path / "imgs")
    index = tmp_path / "idx"
    build = ["index", "build", str(tmp_path / "imgs"), "--index", str(index), "--clip", "demo",
             "--model", str(tiny_sd_dir), "--device", "cpu"]
    plain = CliRunner().invoke(app, build)
    assert plain.exit_code == 0, plain.output
    without = _search(index)

    stored = CliRunner().invoke(app, [*build, "--latents"])
    assert stored.exit_code == 0, stored.output
    assert "latents: encoded 6, reused 0" in stored.stderr
    again = CliRunner().invoke(app, [*build, "--latents"])
    assert "latents: encoded 0, reused 6" in again.stderr  # incremental like the build

    monkeypatch.setattr("diffusers.AutoencoderKL.encode", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("the VAE ran although latents were stored")))
    with_store = _search(index)
    assert [r["path"] for r in with_store] == [r["path"] for r in without]
    for a, b in zip(with_store, without):
        assert abs(a["rerank_score"] - b["rerank_score"]) < 3e-3  # float16 latents; diffusion_itm is on the norm scale


def test_stored_empty_prompt_errors_spare_search_the_empty_prompt_passes(tmp_path, tiny_sd_dir):
    _gallery(tmp_path / "imgs")
    index = tmp_path / "idx"
    build = ["index", "build", str(tmp_path / "imgs"), "--index", str(index), "--clip", "demo",
             "--model", str(tiny_sd_dir), "--device", "cpu"]
    assert CliRunner().invoke(app, build).exit_code == 0
    default_grid = ["--device", "cpu", "--score", "denoise"]  # the grid `index build --latents` stores
    result = CliRunner().invoke(app, ["search", "a red circle", "--index", str(index), "--rerank", "4", "--json",
                                      *default_grid])
    cold = json.loads(result.stdout)
    assert cold["stats"]["empty_prompt_passes"] == 4 * 40 and cold["stats"]["unet_passes"] == 8 * 40

    assert CliRunner().invoke(app, [*build, "--latents"]).exit_code == 0
    assert (index / "empty.npy").is_file()
    result = CliRunner().invoke(app, ["search", "a red circle", "--index", str(index), "--rerank", "4", "--json",
                                      *default_grid])
    warm = json.loads(result.stdout)
    assert warm["stats"]["empty_prompt_passes"] == 0 and warm["stats"]["unet_passes"] == 4 * 40
    assert [r["path"] for r in warm["results"]] == [r["path"] for r in cold["results"]]
    for a, b in zip(warm["results"], cold["results"]):
        assert abs(a["rerank_score"] - b["rerank_score"]) < 3e-3  # float16 latents; diffusion_itm is on the norm scale
