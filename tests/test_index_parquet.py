"""Parquet files of images as a collection (HF datasets' Image struct, img2dataset's jpg column): the
same search results as the same images as loose files, rows read in place by `score`, the service
and thumbnails, bad rows and damaged files recorded, captions kept and shown, and an update that
does not read an unchanged file again."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest_index import build, read_index, run_cli, tiny_clip_dir  # noqa: F401

QUERIES = ("a red square", "green", "two blue circles")
N = 12


def _image(i: int) -> bytes:
    rng = np.random.default_rng(100 + i)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(30 + i % 4, 40, 3), dtype=np.uint8)).save(
        buffer, format="JPEG" if i % 2 == 0 else "PNG")
    return buffer.getvalue()


def _caption(i: int) -> str:
    return f"caption of sample {i}"


HF_META = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"},
                                                             "text": {"dtype": "string", "_type": "Value"}}}}).encode()}


def _write_datasets_layout(path: Path, rows: range, row_group_size: int = 5) -> None:
    """As `datasets.Dataset.to_parquet` writes an Image feature: struct<bytes, path> and a text column."""
    image = pa.array([{"bytes": _image(i), "path": f"img{i}.jpg"} for i in rows],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": image, "text": [_caption(i) for i in rows]}).replace_schema_metadata(HF_META)
    pq.write_table(table, path, row_group_size=row_group_size)


def _write_img2dataset_layout(path: Path, rows: list[int | bytes | None], row_group_size: int = 4) -> None:
    """As img2dataset's parquet output: jpg bytes beside caption, key, url, status, width, height."""
    data = [_image(i) if isinstance(i, int) else i for i in rows]
    table = pa.table({"key": [f"{k:09d}" for k in range(len(rows))], "jpg": pa.array(data, pa.binary()),
                      "caption": [_caption(i) if isinstance(i, int) else "broken" for i in rows],
                      "url": [f"https://example.com/{k}.jpg" for k in range(len(rows))],
                      "status": ["success"] * len(rows), "width": [40] * len(rows)})
    pq.write_table(table, path, row_group_size=row_group_size)


def _loose(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i in range(N):
        (folder / f"s{i:03d}.{'jpg' if i % 2 == 0 else 'png'}").write_bytes(_image(i))


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip_dir):
    root = tmp_path_factory.mktemp("parquet")
    (root / "hf").mkdir()
    _write_datasets_layout(root / "hf" / "train-00000-of-00002.parquet", range(0, 7))
    _write_datasets_layout(root / "hf" / "train-00001-of-00002.parquet", range(7, N))
    (root / "i2d").mkdir()
    _write_img2dataset_layout(root / "i2d" / "00000.parquet", [*range(N), b"not an image", None])
    _loose(root / "loose")
    for source, index in ((root / "hf", "idx-hf"), (str(root / "i2d" / "*.parquet"), "idx-i2d"),
                          (root / "loose", "idx-loose")):
        result, summary = build(source, root / index, tiny_clip_dir, "--batch-size", "4")
        assert result.exit_code == 0, result.output
    return root


def _search(index: Path, query: str, *extra: str) -> list[dict]:
    result = run_cli("search", query, "--index", index, "--json", "--top", "20", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


def _sample_of(row: dict) -> int:
    """The sample number a result shows, whatever the layout: its caption says it."""
    return int(row["caption"].rsplit(" ", 1)[1]) if row["caption"] else int(Path(row["path"]).stem[1:])


def test_parquet_layouts_index_to_the_same_clip_results_as_loose_files(built):
    for query in QUERIES:
        loose = _search(built / "idx-loose", query)
        assert len(loose) == N
        for index in ("idx-hf", "idx-i2d"):
            rows = _search(built / index, query)
            assert [_sample_of(r) for r in rows] == [_sample_of(r) for r in loose]
            assert np.allclose([r["clip_score"] for r in rows], [r["clip_score"] for r in loose], atol=1e-4)


def test_rows_are_recorded_as_file_and_row_with_caption_and_metadata(built):
    _, items, _ = read_index(built / "idx-i2d")
    rec = items["00000.parquet#3"]
    assert rec["status"] == "ok" and rec["shard"] == "00000.parquet" and rec["offset"] == 3
    assert rec["caption"] == _caption(3) and rec["size"] == len(_image(3))
    assert json.loads(rec["json"]) == {"key": "000000003", "url": "https://example.com/3.jpg",
                                       "status": "success", "width": 40}
    _, hf, _ = read_index(built / "idx-hf")
    assert hf["train-00001-of-00002.parquet#2"]["caption"] == _caption(9)  # rows counted per file, across row groups
    assert json.loads(hf["train-00001-of-00002.parquet#2"]["json"]) == {"image_path": "img9.jpg"}


def test_bad_bytes_and_empty_rows_are_recorded_and_the_build_goes_on(built):
    manifest, items, _ = read_index(built / "idx-i2d")
    assert manifest["count"] == N
    assert "not a recognised image format" in items[f"00000.parquet#{N}"]["error"]
    assert "no image bytes" in items[f"00000.parquet#{N + 1}"]["error"]


def test_search_prints_the_caption_in_the_table_and_json(built):
    rows = _search(built / "idx-i2d", "green", "--top", "3")
    assert all(r["caption"] == _caption(_sample_of(r)) for r in rows)
    result = run_cli("search", "green", "--index", built / "idx-i2d", "--top", "3")
    assert result.exit_code == 0 and rows[0]["caption"] in result.output


def test_the_caption_column_wraps_between_words_or_gives_way_at_80_columns(built):
    from discff_cli.commands.search import results_table
    from discff_cli.render.output import table_lines

    rows = _search(built / "idx-i2d", "green", "--top", "3")
    long = "a rather long caption that describes the picture in many words, as alt texts do " * 2
    for row in rows:
        row["caption"] = long
    title, columns, cells, justify = results_table("green", rows, {})
    notes: list[str] = []
    text, _ = table_lines(title, columns, cells, justify, 80, len(columns) - 1, len(columns) - 2, notes)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and not notes
    words = " ".join(" ".join(line.split("│")[3].split()) for line in lines if line.startswith("│"))
    assert set(long.split()) <= set(words.split())  # every word whole, none cut
    for row in rows:
        row["caption"] = "supercalifragilisticexpialidocious-" * 3 + "word"
        row["path"] = "/a/long/folder/" * 3 + row["path"]
    title, columns, cells, justify = results_table("green", rows, {})
    text, shortened = table_lines(title, columns, cells, justify, 80, len(columns) - 1, len(columns) - 2, notes)
    assert max(map(len, text.splitlines())) <= 80 and "caption" not in text.splitlines()[2]
    assert notes == ["the caption column left out to fit the terminal"]


def test_score_service_and_thumbnails_read_rows_in_place(built, tmp_path):
    from fastapi.testclient import TestClient

    from conftest_serve import start_service
    from index.imageio import image_bytes

    assert image_bytes(built / "i2d" / "00000.parquet#5") == _image(5)
    captions = tmp_path / "captions.txt"
    captions.write_text("a red square\ngreen\n")
    result = run_cli("score", built / "hf" / "train-00000-of-00002.parquet#2", captions, "--model", "demo",
                     "--steps", "1", "--levels", "1.0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    missing = run_cli("score", built / "hf" / "train-00000-of-00002.parquet#99", captions, "--model", "demo")
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    reranked = _search(built / "idx-i2d", "green", "--top", "3", "--rerank", "3", "--model", "demo", "--steps", "1",
                       "--levels", "1.0", "--device", "cpu")
    assert all(r["rerank_score"] is not None for r in reranked)  # the diffusion model read the rows too
    worker, app = start_service(built / "idx-i2d")
    try:
        client = TestClient(app)
        for row in client.get("/search", params={"q": "green", "top": 3}).json()["results"]:
            image = client.get(f"/images/{row['id']}")
            assert image.status_code == 200 and image.content == _image(_sample_of(row))
            assert image.headers["content-type"] == ("image/jpeg" if _sample_of(row) % 2 == 0 else "image/png")
            assert row["meta"]["caption"] == _caption(_sample_of(row))
            thumb = client.get(f"/thumbs/{row['id']}")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    finally:
        worker.stop()


def test_an_unchanged_file_is_not_read_again_and_a_changed_one_re_embeds_only_new_rows(built, tmp_path, tiny_clip_dir):
    data = tmp_path / "hf"
    shutil.copytree(built / "hf", data)
    first, summary = build(data, tmp_path / "idx", tiny_clip_dir)
    assert first.exit_code == 0 and summary["indexed"] == N
    # file 0 unchanged as far as stat can tell, but its bytes zeroed: the update must not read it
    zero = data / "train-00000-of-00002.parquet"
    stat = zero.stat()
    zero.write_bytes(bytes(stat.st_size))
    os.utime(zero, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # file 1 rewritten with two more rows (same images in the first five): only the two are embedded
    _write_datasets_layout(data / "train-00001-of-00002.parquet", range(7, N + 2), row_group_size=3)
    again, summary = build(data, tmp_path / "idx", tiny_clip_dir)
    assert again.exit_code == 0, again.output
    assert summary["indexed"] == 2 and summary["unchanged"] == N and summary["skipped"] == 0
    _, items, _ = read_index(tmp_path / "idx")
    assert items[f"train-00001-of-00002.parquet#{N + 1 - 7}"]["caption"] == _caption(N + 1)


def test_a_damaged_file_is_one_sentence_and_rows_before_the_damage_stay(tmp_path, tiny_clip_dir):
    data = tmp_path / "data"
    data.mkdir()
    _write_img2dataset_layout(data / "a.parquet", list(range(8)), row_group_size=4)
    raw = bytearray((data / "a.parquet").read_bytes())
    handle = pq.ParquetFile(data / "a.parquet")
    group = handle.metadata.row_group(1).column(1)  # the jpg column chunk of the second row group
    start = group.dictionary_page_offset or group.data_page_offset
    raw[start + 10:start + group.total_compressed_size - 10] = bytes(group.total_compressed_size - 20)
    (data / "a.parquet").write_bytes(bytes(raw))
    _write_img2dataset_layout(data / "b.parquet", [8, 9])
    (data / "c.parquet").write_bytes((data / "b.parquet").read_bytes()[:-40])  # cut short: no footer
    result, summary = build(data, tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0, result.output
    assert summary["indexed"] == 4 + 2
    errors = {e["path"]: e["error"] for e in summary["skipped_files"]}
    assert set(errors) == {"a.parquet#", "c.parquet#"}
    assert "damaged from row group 1 on" in errors["a.parquet#"] and "the 4 rows before it are indexed" in errors["a.parquet#"]
    assert "not a readable parquet file" in errors["c.parquet#"]


def test_columns_are_detected_or_named(tmp_path, tiny_clip_dir):
    data = tmp_path / "data"
    data.mkdir()
    table = pa.table({"thumbnail": pa.array([b"x"] * 3, pa.binary()), "picture": pa.array([_image(i) for i in range(3)]),
                      "alt": ["one", "two", "three"], "label": ["x", "y", "z"]})
    pq.write_table(table, data / "mixed.parquet")
    result, summary = build(data, tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0 and summary["indexed"] == 0
    assert "several columns of bytes" in summary["skipped_files"][0]["error"]
    assert "--image-column" in summary["skipped_files"][0]["error"]
    result, summary = build(data, tmp_path / "idx", tiny_clip_dir, "--image-column", "picture",
                            "--caption-column", "label")
    assert result.exit_code == 0 and summary["indexed"] == 3
    rows = _search(tmp_path / "idx", "green")
    assert sorted(r["caption"] for r in rows) == ["x", "y", "z"]
    wrong, summary = build(data, tmp_path / "idx2", tiny_clip_dir, "--image-column", "nope")
    assert wrong.exit_code == 0 and "has no column 'nope'" in summary["skipped_files"][0]["error"]


def test_files_written_by_datasets_itself_are_indexed(tmp_path, tiny_clip_dir):
    datasets = pytest.importorskip("datasets")
    images = [Image.open(io.BytesIO(_image(i))) for i in range(4)]
    ds = datasets.Dataset.from_dict({"image": images, "text": [_caption(i) for i in range(4)]},
                                    features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}))
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train.parquet"))
    result, summary = build(tmp_path / "data", tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0, result.output
    assert summary["indexed"] == 4
    _, items, _ = read_index(tmp_path / "idx")
    assert items["train.parquet#2"]["caption"] == _caption(2)


def test_editing_only_a_caption_beside_an_unchanged_image_is_noticed(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    _loose(folder)
    (folder / "s000.txt").write_text("old caption")
    result, summary = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0 and summary["indexed"] == N
    image_stat = (folder / "s000.jpg").stat()
    (folder / "s000.txt").write_text("a new caption")
    os.utime(folder / "s000.txt", ns=(image_stat.st_atime_ns, image_stat.st_mtime_ns + 10 ** 9))
    again, summary = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert again.exit_code == 0 and summary["indexed"] == 0  # the image is not embedded again
    _, items, _ = read_index(tmp_path / "idx")
    assert items["s000.jpg"]["caption"] == "a new caption"
    assert _search(tmp_path / "idx", "green", "--top", str(N))[0] is not None
    assert any(r["caption"] == "a new caption" for r in _search(tmp_path / "idx", "green", "--top", str(N)))
