"""Odd directory entries: every entry the scan does not index is recorded with its reason and printed once;
nothing is read before it is known to be a regular file; the pixel cap bounds sides and the resized area."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from conftest_index import build, read_index, run_cli, tiny_clip_dir, write_images  # noqa: F401


def _build_in_time(folder, index_dir, clip_dir, *extra, limit=60.0):
    """Run the build in a thread so a hang fails the test instead of blocking the suite."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=run_cli("index", "build", folder, "--index", index_dir,
                                                                  "--clip", clip_dir, "--device", "cpu",
                                                                  "--workers", "0", *extra)), daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "index build hung on an odd directory entry"
    return box["r"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_links_loops_and_unreadable_folders_are_recorded_with_reasons(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    write_images(folder, 4)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "endless.png").symlink_to("/dev/zero")
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    (folder / "self.jpg").symlink_to(folder / "self.jpg")
    (folder / "part0" / "loop").symlink_to(folder)
    locked = folder / "locked"
    locked.mkdir()
    Image.new("RGB", (8, 8)).save(locked / "hidden.png")
    locked.chmod(0)
    try:
        result = _build_in_time(folder, tmp_path / "idx", tiny_clip_dir)
        listable = os.access(locked, os.R_OK)  # root reads anything: then the folder is indexed
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    expected = {"pipe.jpg": "FIFO", "endless.png": "character device", "broken.png": "broken symlink",
                "self.jpg": "symlink loop", "part0/loop/": "symlink loop"}
    if not listable:
        expected["locked/"] = "permission denied"
    for name, reason in expected.items():
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"skipped {name}:")]
        assert len(lines) == 1 and reason in lines[0], (name, result.stderr)
    _, items, _ = read_index(tmp_path / "idx")
    for name, reason in expected.items():
        assert items[name]["status"] == "error" and reason in items[name]["error"]
    assert sum(r["status"] == "ok" for r in items.values()) == 4 + listable
    again = _build_in_time(folder, tmp_path / "idx", tiny_clip_dir)  # and a re-run does not hang either
    assert again.exit_code == 0 and "indexed 0," in again.output


def test_name_that_is_not_utf8_is_indexed_under_a_safe_spelling(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    write_images(folder, 3)
    raw = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.png")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(os.fsdecode(raw))
    result, summary = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0, result.output
    assert summary["indexed"] == 4 and summary["skipped"] == 0
    assert summary["safe_names"] == ["caf\\xe9-\\xff.png"]
    _, items, _ = read_index(tmp_path / "idx")
    assert items["caf\\xe9-\\xff.png"]["status"] == "ok"
    again, summary = build(folder, tmp_path / "idx", tiny_clip_dir)  # re-runs no longer fail on it
    assert again.exit_code == 0 and summary["unchanged"] == 4
    found = run_cli("search", "red", "--index", tmp_path / "idx", "--json", "--top", "4")
    assert found.exit_code == 0 and any("caf\\xe9" in r["path"] for r in json.loads(found.stdout)["results"])


def test_extreme_aspect_ratio_is_refused_under_the_area_cap(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    write_images(folder, 2)
    Image.fromarray(np.zeros((1, 100_000, 3), np.uint8)).save(folder / "strip.png")  # 0.1 MP
    Image.fromarray(np.zeros((2, 300, 3), np.uint8)).save(folder / "wide.png")
    result = run_cli("index", "build", folder, "--index", tmp_path / "idx", "--clip", tiny_clip_dir,
                     "--device", "cpu", "--max-pixels", "1000000")
    assert result.exit_code == 0, result.output
    strip = [line for line in result.stderr.splitlines() if line.startswith("skipped strip.png:")]
    assert len(strip) == 1 and "exceeds" in strip[0]
    _, items, _ = read_index(tmp_path / "idx")
    assert items["wide.png"]["status"] == "ok"  # 300x2 resized is small: still indexed


def test_open_rgb_bounds_resized_area_and_refuses_non_regular_files(tmp_path):
    from index.imageio import ImageDecodeError, check_size, open_rgb

    check_size(640, 480, 1_000_000, resize_to=224)
    with pytest.raises(ImageDecodeError, match="after resizing"):
        check_size(30_000, 1, 100_000_000, resize_to=64)  # 0.03 MP, 123 MP resized
    with pytest.raises(ImageDecodeError, match="a side exceeds"):
        check_size(90_000, 1, 100_000_000)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "p.png")
        with pytest.raises(ImageDecodeError, match="regular file"):
            open_rgb(tmp_path / "p.png")
