"""`discff explain`: each map sums to the very number `discff score` prints with the same options, the
PNG shows one panel per word, padding is never a word, and bad input is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest_index import run_cli
from discff_cli.engine.config import DEFAULT_SCORE

# An SD-2.1-base-shaped model: 16 attn2 layers at four resolutions, so the map's upsampling is tested.
FLAGS = ["--steps", "2", "--levels", "0.5,1.0", "--seed", "3", "--device", "cpu"]
CAPTION = "a red circle left of a blue square"
PHOTO = Path(__file__).parent / "data" / "photo-f3-board.jpg"


def explain_json(image, *args):
    result = run_cli("explain", image, CAPTION, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def score_json(image, captions, *args):
    result = run_cli("score", image, captions, "--json", *args)
    assert result.exit_code == 0, result.output
    return {r["text"]: r["score"] for r in json.loads(result.stdout)["results"]}


@pytest.mark.parametrize("extra", [[], ["--mask-padding", "--layers", "up", "--lse-lambda", "2"]])
def test_every_map_sums_to_the_score_that_score_prints(tiny_sd_dir, sample_image, tmp_path, extra):
    captions = tmp_path / "captions.txt"
    captions.write_text(f"{CAPTION}\na green triangle\n")
    model = ["--model", tiny_sd_dir, *FLAGS, *extra]
    doc = explain_json(sample_image, *model, "--out", tmp_path / "map.png")
    for family in ("denoise", "attention", "diffusion_itm", "discffusion"):
        printed = score_json(sample_image, captions, *model, "--score", family)[CAPTION]
        summed = sum(map(sum, doc["maps"][family]["grid"]))
        assert doc["maps"][family]["score"] == pytest.approx(printed, rel=1e-4, abs=1e-7), family
        assert summed == pytest.approx(printed, rel=1e-3, abs=1e-6), family  # the printed grid, 6 digits a cell
    assert doc["score"] == DEFAULT_SCORE and doc["score_value"] == doc["maps"][DEFAULT_SCORE]["score"]


def test_words_exclude_sos_eos_and_padding_and_each_gets_a_panel(tiny_sd_dir, sample_image, tmp_path):
    out = tmp_path / "map.png"
    doc = explain_json(sample_image, "--model", tiny_sd_dir, *FLAGS, "--out", out)
    assert [w["word"] for w in doc["words"]] == CAPTION.split()
    positions = [p for w in doc["words"] for p in w["tokens"]]
    assert positions == list(range(1, len(positions) + 1))  # 0 is SOS; EOS and padding come after
    grid = doc["grid_size"]
    assert all(len(w["grid"]) == grid[0] and min(map(min, w["grid"])) >= 0 for w in doc["words"])
    sheet = Image.open(out)
    # image, denoise map, caption attention and one per word, four panels a row
    rows = -(-(3 + len(CAPTION.split())) // 4)
    assert sheet.format == "PNG" and sheet.height > rows * 224 and doc["out"] == str(out)


def test_a_real_photo_with_the_demo_model_writes_a_png_and_says_what_the_model_knows(tmp_path):
    out = tmp_path / "photo.png"
    result = run_cli("explain", PHOTO, "a green square", "--model", "demo", "--steps", "1", "--levels", "0.5",
                     "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert "4 colours" in result.stderr and "3 shapes" in result.stderr
    assert Image.open(out).size[0] >= 4 * 224 and "maps written to" in result.stdout
    assert f"{DEFAULT_SCORE} *" in result.stdout and "square" in result.stdout


def test_score_on_a_demo_world_image_does_not_warn(tmp_path):
    from training.world import make_example

    image = tmp_path / "scene.png"
    make_example("test", 0).image.save(image)
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    result = run_cli("score", image, captions, "--model", "demo", "--steps", "1", "--levels", "0.5")
    assert result.exit_code == 0 and "demo world" not in result.stderr
    photo = run_cli("score", PHOTO, captions, "--model", "demo", "--steps", "1", "--levels", "0.5")
    assert photo.exit_code == 0 and "4 colours" in photo.stderr


@pytest.mark.parametrize("args, says", [
    (["--prune"], "--prune"),
    (["--out", "/nonexistent-dir/x.png"], "Cannot write the map"),
])
def test_refusals_are_one_sentence(tiny_sd_dir, sample_image, args, says):
    result = run_cli("explain", sample_image, CAPTION, "--model", tiny_sd_dir, *FLAGS, *args)
    assert result.exit_code != 0 and says in result.output and "Traceback" not in result.output


def test_an_unreadable_image_or_empty_caption_fails_before_any_model_loads(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = run_cli("explain", bad, CAPTION, "--model", "/nonexistent-model")
    assert result.exit_code == 1 and "Cannot read image" in result.output
    result = run_cli("explain", PHOTO, "  ", "--model", "/nonexistent-model")
    assert result.exit_code == 1 and "Give a caption" in result.output
