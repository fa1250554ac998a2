"""Issue 25's list of what a new user hit: each one fixed, each with a test that fails if it comes back."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from conftest_index import build, rerank_index, run_cli, tiny_clip_dir, write_images  # noqa: F401
from conftest_tune import FAST_CLI, colour_pairs, one_thread  # noqa: F401
from discff_cli.engine.config import DEFAULT_SCORE

QUERY = "a red circle left of a blue square"
FAST = ["--steps", "1", "--levels", "0.5", "--device", "cpu"]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, tiny_clip_dir, tiny_sd_dir):
    return rerank_index(tmp_path_factory.mktemp("frictions"), tiny_clip_dir, tiny_sd_dir, 12, 7)


def search_doc(index_dir, *args):
    result = run_cli("search", QUERY, "--index", index_dir, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def test_results_carry_the_fused_score_that_decides_the_order(small_index):
    from discff_cli.search.fusion import fuse

    doc, _ = search_doc(small_index, "--top", "8", "--rerank", "6", *FAST)
    head = doc["results"][:6]
    fused = [r["fused_score"] for r in head]
    assert fused == sorted(fused, reverse=True) and all(r["fused_score"] is None for r in doc["results"][6:])
    by_clip = sorted(head, key=lambda r: r["clip_rank"])
    expected = fuse([r["clip_score"] for r in by_clip], [r["rerank_score"] for r in by_clip], "zsum", 0.5)
    assert [r["fused_score"] for r in by_clip] == pytest.approx(list(expected), abs=1e-4)  # CLIP: 6 decimals
    assert doc["fusion"] == {"method": "zsum", "weight": 0.5} and doc["score"] == DEFAULT_SCORE


def test_search_table_fits_80_columns_with_whole_headers_and_marked_paths(small_index):
    from discff_cli.commands.search import results_table
    from discff_cli.render.output import table_lines

    doc, _ = search_doc(small_index, "--top", "5", "--rerank", "3", *FAST)
    for row in doc["results"]:
        row["path"] = "/a/long/folder/that/a/user/keeps/images/in/" + row["path"].rsplit("/", 1)[-1]
    title, columns, rows, justify = results_table(QUERY, doc["results"], doc)
    text, shortened = table_lines(title, columns, rows, justify, 80, shrink=len(columns) - 1)
    lines = text.splitlines()
    assert shortened and max(map(len, lines)) <= 80
    header = next(line for line in lines if "rank" in line and "path" in line)
    for column in ("rank", "CLIP rank", "fused", DEFAULT_SCORE, "CLIP", "path"):
        assert column in header
    body = [line for line in lines if line.startswith("│")]
    for row, line in zip(doc["results"], body):
        assert "…" in line and row["path"].rsplit("/", 1)[-1] in line  # the cut is shown; the file name stays
    assert "zsum, weight 0.5" in " ".join(text.split()) and DEFAULT_SCORE in title  # the title may wrap


def test_scores_print_with_significant_digits_not_fixed_decimals():
    from discff_cli.render.output import format_score

    assert format_score(0.00012346) == "0.0001235" and format_score(-3.2e-06) == "-3.2e-06"
    assert format_score(4.21234) == "4.212" and format_score(-0.0) == "0" and format_score(None) == ""


@pytest.mark.parametrize("command", ["", "eval", "explain", "search", "score", "serve", "tune", "demo",
                                     "index build"])
def test_every_help_fits_80_columns(command):
    result = run_cli(*command.split(), "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output


def test_tune_that_keeps_epoch_0_says_the_deltas_are_untrained(colour_pairs, tmp_path, one_thread):  # noqa: F811
    out = tmp_path / "d.safetensors"
    result = run_cli("tune", colour_pairs, "--model", "demo", "--out", out, "--epochs", "1", "--lr", "1e-12",
                     "--val-fraction", "0.25", "--json", *FAST_CLI)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["best_epoch"] == 0 and "holds epoch 0: zero deltas" in doc["note"]
    assert "note: no epoch beat the untrained deltas" in result.stderr


def test_first_build_counts_identical_files_as_duplicates(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    files = write_images(folder, 4)
    shutil.copy(files[0], folder / ("same" + files[0].suffix))
    shutil.copy(files[0], folder / ("again" + files[0].suffix))
    _, summary = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert summary["indexed"] == 6 and summary["duplicates"] == 2


def test_captions_from_a_device_are_refused_as_not_a_file(tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    result = run_cli("score", image, "/dev/null", "--model", "/no/model")
    assert result.exit_code == 1 and "not a regular file" in result.output and "does not exist" not in result.output


def test_decompression_bomb_message_quotes_the_max_pixels_cap(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (1200, 1000)).save(folder / "big.png")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(folder / "small.png")
    result = run_cli("index", "build", folder, "--index", tmp_path / "idx", "--clip", tiny_clip_dir, "--device",
                     "cpu", "--max-pixels", "1000000")
    assert result.exit_code == 0, result.output
    assert "1,000,000 pixels" in result.output and "--max-pixels" in result.output
    from index.imageio import ImageDecodeError, open_rgb

    # A 90 MP header (no pixel data): PIL's own fixed 89 MP limit no longer answers for the user's cap.
    header = tmp_path / "header-only.png"
    header.write_bytes(png_header(9500, 9500))
    with pytest.raises(ImageDecodeError, match="truncated"):
        open_rgb(header, max_pixels=100_000_000)  # allowed by the cap; fails only for lack of data
    with pytest.raises(ImageDecodeError, match="cap of 10,000,000 pixels"):
        open_rgb(header, max_pixels=10_000_000)


def png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk for width x height RGB, and IEND: a size and no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_layers_beyond_the_model_are_refused(tiny_sd_dir, tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    result = run_cli("score", image, captions, "--model", tiny_sd_dir, "--layers", "last-99", *FAST)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "last-99 asks for 99 cross-attention layers, but this model has 16" in result.output


def test_ctrl_c_during_search_exits_130_with_a_hint(small_index, monkeypatch):
    from discff_cli.engine.scorer import Scorer

    def pressed_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt  # what the terminal delivers mid-rerank

    monkeypatch.setattr(Scorer, "rank", pressed_ctrl_c)
    result = run_cli("search", QUERY, "--index", small_index, "--rerank", "3", *FAST)
    assert result.exit_code == 130 and "Interrupted" in result.output and "Aborted" not in result.output


def test_rerank_deeper_than_the_index_says_so(small_index):
    doc, result = search_doc(small_index, "--rerank", "500", *FAST)
    assert "--rerank 500 asks for more images than the index holds (12); all 12 are reranked" in result.stderr
    assert len(doc["results"]) == 12 and all(r["rerank_score"] is not None for r in doc["results"])
