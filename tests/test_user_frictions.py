"""What a new user tripped over: each friction fixed the way they would expect."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest_index import build, read_index, run_cli, tiny_clip_dir, write_images  # noqa: F401
from conftest_tune import FAST_CLI, colour_pairs, one_thread  # noqa: F401


def test_index_build_uses_the_clip_the_index_records(tmp_path, tiny_clip_dir, monkeypatch):
    monkeypatch.delenv("DISCFF_CLIP", raising=False)
    write_images(tmp_path / "images", 5)
    first, _ = build(tmp_path / "images", tmp_path / "idx", tiny_clip_dir)
    assert first.exit_code == 0
    again = run_cli("index", "build", tmp_path / "images", "--index", tmp_path / "idx", "--device", "cpu", "--json")
    assert again.exit_code == 0, again.output  # the default ViT-H-14 would need a download
    assert json.loads(again.stdout)["unchanged"] == 5


def test_build_summary_tells_renames_duplicates_and_removals_apart(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    files = write_images(folder, 6)
    build(folder, tmp_path / "idx", tiny_clip_dir)
    files[0].rename(folder / "moved.png" if files[0].suffix == ".png" else folder / "moved.jpg")
    _, renamed = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert (renamed["renamed"], renamed["duplicates"], renamed["unchanged"], renamed["removed"]) == (1, 0, 5, 0)
    copy = folder / ("copy" + files[1].suffix)
    shutil.copy(files[1], copy)
    _, duplicated = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert (duplicated["duplicates"], duplicated["renamed"], duplicated["unchanged"]) == (1, 0, 6)
    copy.unlink()
    result, removed = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert removed["removed"] == 1 and read_index(tmp_path / "idx")[0]["count"] == 6
    table = run_cli("index", "build", folder, "--index", tmp_path / "idx", "--device", "cpu")
    assert "unchanged 6, renamed 0, duplicates 0, removed 0" in table.stdout


def test_ivf_pq_on_a_handful_of_images_falls_back_and_says_why(tmp_path, tiny_clip_dir):
    write_images(tmp_path / "images", 5)
    result = run_cli("index", "build", tmp_path / "images", "--index", tmp_path / "idx", "--clip", tiny_clip_dir,
                     "--device", "cpu", "--index-type", "ivf_pq")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ivf_pq")]
    assert len(notes) == 1 and "built flat" in notes[0]
    assert read_index(tmp_path / "idx")[0]["faiss"]["type"] == "flat"
    assert run_cli("search", "x", "--index", tmp_path / "idx").exit_code == 0


def test_tables_keep_long_paths_whole_when_piped(tmp_path, tiny_clip_dir):
    folder = tmp_path / ("a-rather-long-folder-name-" * 4) / "images"
    write_images(folder, 3)
    build(folder, tmp_path / "idx", tiny_clip_dir)
    result = run_cli("search", "x", "--index", tmp_path / "idx")
    assert result.exit_code == 0
    _, items, _ = read_index(tmp_path / "idx")
    for rel in items:
        assert str(folder / rel) in result.stdout  # whole, on one line, no "…"
    assert "…" not in result.stdout


def test_intervals_are_not_wrapped_and_info_has_no_empty_header(tmp_path, tiny_clip_dir, capsys):
    from discff_cli.render.output import print_table

    cells = [f"0.9{i}5 [0.94, 0.99]" for i in range(6)]
    print_table("eval", [f"system {i}" for i in range(6)], [cells], ["right"] * 6)
    out = capsys.readouterr().out
    assert all(cell in out for cell in cells)

    write_images(tmp_path / "images", 2)
    build(tmp_path / "images", tmp_path / "idx", tiny_clip_dir)
    info = run_cli("index", "info", "--index", tmp_path / "idx")
    lines = info.stdout.splitlines()
    assert not any(line.startswith("┃") and not line.strip("┃ ") for line in lines)  # no blank header row
    assert not any("┡" in line for line in lines)


def test_captions_file_with_a_bom_has_no_bom_in_its_first_caption(tmp_path):
    from discff_cli.commands.score import read_captions

    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffa red circle\na blue square\n".encode("utf-8"))
    assert read_captions(str(path)) == ["a red circle", "a blue square"]


def _deltas_file(path, base_model: str):
    import torch
    from safetensors.torch import save_file

    from discff_cli.engine.deltas import FORMAT

    save_file({"x": torch.zeros(1)}, str(path), metadata={"discff": json.dumps({"format": FORMAT,
                                                                                "base_model": base_model})})
    return path


def test_deltas_imply_their_base_model(tmp_path, sample_image):
    from discff_cli.engine.config import DEFAULT_MODEL
    from discff_cli.engine.deltas import model_for_deltas

    deltas = _deltas_file(tmp_path / "d.safetensors", "demo")
    assert model_for_deltas(None, str(deltas), default=DEFAULT_MODEL) == "demo"
    assert model_for_deltas("other", str(deltas), default=DEFAULT_MODEL) == "other"
    assert model_for_deltas(None, None, default=DEFAULT_MODEL) == DEFAULT_MODEL
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    result = run_cli("score", sample_image, captions, "--deltas", deltas, *FAST_CLI)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert DEFAULT_MODEL not in result.output  # the demo model the deltas name was loaded, not the default


def test_tune_without_validation_triplets_says_so_and_names_no_best_epoch(colour_pairs, tmp_path, one_thread):  # noqa: F811
    out = tmp_path / "d.safetensors"
    result = run_cli("tune", colour_pairs, "--model", "demo", "--out", out, "--epochs", "1", "--val-fraction", "0",
                     "--json", *FAST_CLI)
    assert result.exit_code == 0, result.output
    assert "no validation triplets" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["val_triplets"] == 0 and doc["best_epoch"] is None and out.is_file()
    table = run_cli("tune", colour_pairs, "--model", "demo", "--out", out, "--epochs", "1", "--val-fraction", "0",
                    *FAST_CLI)
    assert "best" not in table.stdout
    assert np.isfinite([p["train_loss"] for p in doc["curve"] if p["train_loss"] is not None]).all()
