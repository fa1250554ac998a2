"""A bad eval file stops `discff eval` before any model loads, naming the line, with a non-zero exit."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from discff_cli.cli import app

# Models that do not exist: if validation did not come first, the error would be about these.
NO_MODELS = ["--clip", "/nonexistent/clip", "--model", "/nonexistent/sd"]


@pytest.fixture()
def eval_dir(tmp_path):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), (10, 10, 200)).save(tmp_path / "b.png")
    return tmp_path


def _run(path, *extra):
    return CliRunner().invoke(app, ["eval", str(path), *NO_MODELS, *extra])


GOOD = {"image": "a.png", "texts": ["red", "blue"], "answer": 0}


@pytest.mark.parametrize("bad, fragment", [
    ("{not json", "not valid JSON"),
    (json.dumps({"image": "a.png", "texts": ["red", "blue"], "answer": 2}), '"answer" must be an integer index from 0 to 1'),
    (json.dumps({"images": ["a.png", "b.png"], "texts": ["red", "blue", "green"]}), "same length"),
    (json.dumps({"image": "a.png", "texts": ["red"], "answer": 0}), "at least two"),
    (json.dumps({"picture": "a.png"}), "expected {"),
    (json.dumps(["a.png"]), "expected a JSON object"),
    (json.dumps({"text": "red", "images": ["a.png", "missing.png"], "answer": 0}), "image 'missing.png' cannot be used"),
])
def test_bad_line_is_reported_with_its_number(eval_dir, bad, fragment):
    path = eval_dir / "items.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(GOOD) + "\n" + bad + "\n" + json.dumps(GOOD) + "\n")
    result = _run(path)
    assert result.exit_code == 1
    assert "line 4:" in result.output and fragment in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1  # one sentence, no partial table


def test_corrupt_image_is_reported_with_its_line(eval_dir):
    (eval_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    path = eval_dir / "items.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"images": ["a.png", "broken.png"], "texts": ["r", "b"]}) + "\n")
    result = _run(path)
    assert result.exit_code == 1 and "line 2:" in result.output and "broken.png" in result.output


def test_missing_or_empty_file_is_one_clear_error(eval_dir):
    result = _run(eval_dir / "nope.jsonl")
    assert result.exit_code == 1 and "does not exist" in result.output
    empty = eval_dir / "empty.jsonl"
    empty.write_text("\n")
    result = _run(empty)
    assert result.exit_code == 1 and "has no items" in result.output


def test_valid_file_then_fails_on_the_missing_model_not_the_data(eval_dir):
    path = eval_dir / "items.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    result = _run(path, "--no-diffusion")
    assert result.exit_code != 0 and "line" not in result.output and "/nonexistent/clip" in result.output
