"""`discff index build` / `index info`: incremental updates, bad files, resume, lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest_index import (build, image_folder, read_index, run_cli, tiny_clip_dir,  # noqa: F401
                            other_clip_dir, write_images)


def test_incremental_rebuilds_embed_only_what_changed(image_folder, tiny_clip_dir, tmp_path):
    index_dir = tmp_path / "idx"
    _, first = build(image_folder, index_dir, tiny_clip_dir)
    assert (first["indexed"], first["skipped"], first["files"]) == (20, 0, 20)
    _, manifest_before, emb_before = (None, *read_index(index_dir)[1:])

    _, again = build(image_folder, index_dir, tiny_clip_dir)
    assert again["indexed"] == 0 and again["unchanged"] == 20

    files = sorted(image_folder.rglob("*.*"))
    write_images(tmp_path / "fresh", 1, seed=99)        # new content for one existing path
    changed = files[3]
    Image.open(next((tmp_path / "fresh").rglob("*.*"))).save(changed)
    _, modified = build(image_folder, index_dir, tiny_clip_dir)
    assert modified["indexed"] == 1 and modified["unchanged"] == 19

    touched = files[5]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    _, after_touch = build(image_folder, index_dir, tiny_clip_dir)  # same bytes: the hash says unchanged
    assert after_touch["indexed"] == 0 and after_touch["reused_by_hash"] == 1

    files[7].unlink()
    _, after_delete = build(image_folder, index_dir, tiny_clip_dir)
    assert after_delete["removed"] == 1 and after_delete["indexed"] == 0
    assert read_index(index_dir)[0]["count"] == 19

    renamed = files[9].with_name("renamed.png")
    old_rel = files[9].relative_to(image_folder).as_posix()
    _, items_before, emb_before = read_index(index_dir)
    files[9].rename(renamed)
    _, after_rename = build(image_folder, index_dir, tiny_clip_dir)
    assert after_rename["indexed"] == 0 and after_rename["removed"] == 0
    manifest, items, emb = read_index(index_dir)
    new_rel = renamed.relative_to(image_folder).as_posix()
    assert old_rel not in items and new_rel in items
    np.testing.assert_array_equal(emb[items[new_rel]["row"]], emb_before[items_before[old_rel]["row"]])
    assert manifest["count"] == 19 and manifest["generation"] == 6


def _bad_and_odd_files(folder: Path) -> tuple[dict[str, str], dict[str, Image.Image]]:
    """Write every kind of bad file and every odd-but-valid mode.

    Returns ({bad file: expected reason fragment}, {odd file: the RGB image it must decode to}).
    """
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    good_png = folder / "good.png"
    rgb.save(good_png)
    data = good_png.read_bytes()
    bad = {}
    (folder / "zero.jpg").write_bytes(b"")
    bad["zero.jpg"] = "empty"
    (folder / "notes.png").write_text("this is not an image\n")
    bad["notes.png"] = "not a recognised image"
    rgb.save(folder / "full.jpg", quality=95)
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:300])
    (folder / "full.jpg").unlink()
    bad["truncated.jpg"] = "truncated"
    idat = data.index(b"IDAT")
    corrupt = bytearray(data)
    corrupt[idat + 8: idat + 40] = bytes(32)
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    bad["corrupt.png"] = "corrupt"
    Image.new("RGB", (1200, 1000), (10, 20, 30)).save(folder / "bomb.png")  # 1.2 MP > the 1 MP cap below
    bad["bomb.png"] = "decompression bomb"

    odd = {"good.png": rgb}
    rgb.convert("CMYK").save(folder / "cmyk.tif")
    odd["cmyk.tif"] = rgb
    gray = (np.arange(800).reshape(20, 40) % 256).astype(np.uint16)
    Image.fromarray(gray * 257).save(folder / "deep16.png")
    odd["deep16.png"] = Image.fromarray(gray.astype(np.uint8)).convert("RGB")
    few = Image.fromarray(rng.integers(0, 4, (20, 40, 3), dtype=np.uint8) * 60)
    few.quantize(colors=64, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE).save(folder / "palette.png")
    odd["palette.png"] = few
    rgba = rgb.convert("RGBA")
    alpha = np.zeros((20, 40), np.uint8)
    alpha[:, :20] = 255
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "alpha.png")
    expected_alpha = np.asarray(rgb).copy()
    expected_alpha[:, 20:] = 255  # transparent half composited onto white
    odd["alpha.png"] = Image.fromarray(expected_alpha)
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise when displayed
    rgb.save(folder / "rotated.png", exif=exif.tobytes())
    odd["rotated.png"] = rgb.transpose(Image.Transpose.ROTATE_270)
    frames = [Image.new("RGB", (16, 16), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    odd["anim.gif"] = frames[0]
    rgb.save(folder / "lossless.webp", lossless=True)
    odd["lossless.webp"] = rgb
    rgb.save(folder / "plain.bmp")
    odd["plain.bmp"] = rgb
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return bad, odd


def test_bad_files_are_skipped_with_reasons_and_odd_modes_convert(tmp_path, tiny_clip_dir):
    from index.clip_model import load_clip

    folder = tmp_path / "mixed"
    bad, odd = _bad_and_odd_files(folder)
    result = run_cli("index", "build", folder, "--index", tmp_path / "idx", "--clip", tiny_clip_dir,
                     "--device", "cpu", "--max-pixels", "1000000", "--workers", "2", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    for name, reason in bad.items():
        lines = [line for line in result.output.splitlines() if line.startswith(f"skipped {name}:")]
        assert len(lines) == 1 and reason in lines[0], (name, result.output)
    assert f"indexed {len(odd)}, skipped {len(bad)}," in result.output  # indexed + skipped = image files

    manifest, items, emb = read_index(tmp_path / "idx")
    assert manifest["count"] == len(odd) and manifest["errors"] == len(bad)
    assert {p for p, r in items.items() if r["status"] == "error"} == set(bad)
    assert all(items[p]["error"] for p in bad)
    clip = load_clip(tiny_clip_dir, "cpu")
    names = sorted(odd)
    expected = clip.embed_images([odd[n] for n in names])
    stored = np.stack([emb[items[n]["row"]] for n in names]).astype(np.float32)
    np.testing.assert_allclose(stored, expected, atol=2e-3)
    assert (items["rotated.png"]["width"], items["rotated.png"]["height"]) == (20, 40)

    info = run_cli("index", "info", "--index", tmp_path / "idx", "--json")
    doc = json.loads(info.stdout)
    assert {e["path"] for e in doc["skipped_files"]} == set(bad) and doc["count"] == len(odd)


def test_interrupted_build_resumes_to_the_same_index(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    write_images(folder, 30)
    _, clean = build(folder, tmp_path / "clean", tiny_clip_dir, "--batch-size", "4")

    killed, _ = build(folder, tmp_path / "resumed", tiny_clip_dir, "--batch-size", "4",
                      env={"DISCFF_INDEX_FAIL_AFTER_BATCHES": "3"})
    assert killed.exit_code != 0
    assert not (tmp_path / "resumed" / "manifest.json").exists()  # nothing half-published
    assert len(list((tmp_path / "resumed" / "pending").glob("chunk-*.json"))) == 3

    _, resumed = build(folder, tmp_path / "resumed", tiny_clip_dir, "--batch-size", "4")
    assert resumed["resumed"] == 12 and resumed["indexed"] == 30  # only 18 decoded and embedded now
    assert not (tmp_path / "resumed" / "pending").exists()
    m1, items1, emb1 = read_index(tmp_path / "clean")
    m2, items2, emb2 = read_index(tmp_path / "resumed")
    strip = lambda items: {p: {k: v for k, v in r.items() if k != "row"} for p, r in items.items()}  # noqa: E731
    assert strip(items1) == strip(items2)
    np.testing.assert_allclose(emb1.astype(np.float32), emb2.astype(np.float32), atol=1e-3)
    assert (m1["count"], m1["faiss"]["type"]) == (m2["count"], m2["faiss"]["type"])


def test_second_writer_is_refused_and_other_clip_is_refused(image_folder, tiny_clip_dir, other_clip_dir, tmp_path):
    from index.store import writer_lock

    index_dir = tmp_path / "idx"
    with writer_lock(index_dir):
        result, _ = build(image_folder, index_dir, tiny_clip_dir)
    assert result.exit_code == 1 and "being written" in result.output
    assert "Traceback" not in result.output

    ok, _ = build(image_folder, index_dir, tiny_clip_dir)
    assert ok.exit_code == 0
    mismatch, _ = build(image_folder, index_dir, other_clip_dir)
    assert mismatch.exit_code == 1 and "was built with CLIP" in mismatch.output
    rebuilt, summary = build(image_folder, index_dir, other_clip_dir, "--rebuild")
    assert rebuilt.exit_code == 0 and summary["indexed"] == 20


def test_info_reports_the_manifest(image_folder, tiny_clip_dir, tmp_path):
    build(image_folder, tmp_path / "idx", tiny_clip_dir, "--model", "some/sd-model")
    doc = json.loads(run_cli("index", "info", "--index", tmp_path / "idx", "--json").stdout)
    assert doc["count"] == 20 and doc["model"] == "some/sd-model"
    assert doc["clip"]["spec"] == str(Path(tiny_clip_dir).resolve()) and doc["clip"]["dim"] == 32
    assert doc["faiss"]["type"] == "flat" and doc["faiss"]["recall_at_10"] == 1.0
    table = run_cli("index", "info", "--index", tmp_path / "idx")
    assert table.exit_code == 0 and "flat" in table.output
    missing = run_cli("index", "info", "--index", tmp_path / "nothing")
    assert missing.exit_code == 1 and "No index" in missing.output


def test_forced_approximate_type_is_recorded_with_measured_recall(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    write_images(folder, 60)
    _, summary = build(folder, tmp_path / "idx", tiny_clip_dir, "--index-type", "hnsw")
    manifest = read_index(tmp_path / "idx")[0]
    assert manifest["faiss"]["type"] == "hnsw" and manifest["faiss"]["recall_queries"] > 0
    assert manifest["faiss"]["recall_at_10"] == pytest.approx(summary["recall_at_10"])
