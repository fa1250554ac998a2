"""`discff score` through the CLI: output formats, and bad input as one sentence with no traceback."""

from __future__ import annotations

from discff_cli.engine.config import DEFAULT_SCORE

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from discff_cli.cli import app

FAST = ["--steps", "2", "--levels", "0.5", "--device", "cpu"]


@pytest.fixture()
def captions(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("a red circle\n\n  a blue square  \na green triangle left of a red circle\n")
    return path


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_json_lists_every_caption_once_ranked_best_first(tiny_sd_dir, sample_image, captions):
    result = run("score", sample_image, captions, "--model", tiny_sd_dir, "--json", *FAST)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["image"] == str(sample_image)
    texts = [r["text"] for r in doc["results"]]
    assert sorted(texts) == sorted(["a red circle", "a blue square", "a green triangle left of a red circle"])
    scores = [r["score"] for r in doc["results"]]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in doc["results"]] == [1, 2, 3]
    assert doc["score"] == DEFAULT_SCORE and doc["engine"]["score"] == DEFAULT_SCORE and doc["deltas"] is None


def test_every_score_family_ranks_the_captions_and_json_says_which(tiny_sd_dir, sample_image, captions):
    ranked = {}
    for family in ("attention", "denoise", "discffusion"):
        doc = json.loads(run("score", sample_image, captions, "--model", tiny_sd_dir, "--json", "--score", family,
                             *FAST).stdout)
        assert doc["score"] == family
        ranked[family] = [r["score"] for r in doc["results"]]
    assert len({tuple(v) for v in ranked.values()}) == 3  # three different readings of the same passes


def test_table_names_the_captions(tiny_sd_dir, sample_image, captions):
    result = run("score", sample_image, captions, "--model", tiny_sd_dir, *FAST)
    assert result.exit_code == 0, result.output
    assert "a blue square" in result.stdout and "rank" in result.stdout


def test_model_from_environment_variable(tiny_sd_dir, sample_image, captions, monkeypatch):
    monkeypatch.setenv("DISCFF_MODEL", str(tiny_sd_dir))
    result = run("score", sample_image, captions, "--json", *FAST)
    assert result.exit_code == 0, result.output


def _assert_one_sentence_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_image(tiny_sd_dir, tmp_path, captions):
    result = run("score", tmp_path / "nope.jpg", captions, "--model", tiny_sd_dir, *FAST)
    _assert_one_sentence_error(result, "nope.jpg", "not found")


def test_corrupt_image(tiny_sd_dir, tmp_path, captions):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    _assert_one_sentence_error(run("score", bad, captions, "--model", tiny_sd_dir, *FAST), "bad.jpg")


def test_empty_and_missing_captions_file(tiny_sd_dir, sample_image, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    _assert_one_sentence_error(run("score", sample_image, empty, "--model", tiny_sd_dir), "no captions")
    _assert_one_sentence_error(run("score", sample_image, tmp_path / "none.txt", "--model", tiny_sd_dir),
                               "does not exist")


def test_unknown_model_path(sample_image, captions, tmp_path):
    _assert_one_sentence_error(run("score", sample_image, captions, "--model", tmp_path / "no-such-model", *FAST),
                               "no-such-model", "does not exist")


def test_directory_that_is_not_a_diffusers_model(sample_image, captions, tmp_path):
    _assert_one_sentence_error(run("score", sample_image, captions, "--model", tmp_path, *FAST), "unet")


def test_missing_hub_weights_offline_exit_code_2(sample_image, captions, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = run("score", sample_image, captions, "--model", "someorg/not-downloaded-model", *FAST)
    assert result.exit_code == 2
    _assert_one_sentence_error(result, "someorg/not-downloaded-model", "download")


def test_bad_option_values_are_rejected_before_loading_anything(sample_image, captions):
    assert run("score", sample_image, captions, "--levels", "0.2,abc").exit_code == 2
    assert run("score", sample_image, captions, "--layers", "sideways").exit_code == 2


def test_help_answers_in_under_a_second_without_heavy_imports():
    code = ("import sys, time; t = time.perf_counter(); from discff_cli.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'diffusers', 'open_clip', 'faiss', 'transformers') if m in sys.modules]\n"
            "print(time.perf_counter() - t, heavy, file=sys.stderr)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    elapsed, heavy = proc.stderr.strip().split(" ", 1)
    assert heavy == "[]"
    assert wall < 1.0, f"discff --help took {wall:.2f}s"
    assert "score" in proc.stdout and "search" in proc.stdout
