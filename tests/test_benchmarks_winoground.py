"""Winoground read from both published layouts (examples.jsonl + images/, and parquet with the
images embedded as `datasets` Image structs): image k matches caption k, the tag is carried."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from discff_cli.evaluation.datasets import load_benchmark

from conftest_benchmarks import isolated_cache  # noqa: F401
from conftest_benchmarks import DEMO_CLIP, NO_MODELS, json_rows, run_eval, solid

ROWS = [
    {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "a red square left of a blue circle",
     "caption_1": "a blue square left of a red circle", "tag": "Adjective-Color", "secondary_tag": "",
     "num_main_preds": 1, "collapsed_tag": "Relation"},
    {"id": 1, "image_0": "ex_1_img_0", "image_1": "ex_1_img_1", "caption_0": "a circle above a square",
     "caption_1": "a square above a circle", "tag": "Noun", "secondary_tag": "Symbolic",
     "num_main_preds": 1, "collapsed_tag": "Object"},
    {"id": 2, "image_0": "ex_2_img_0", "image_1": "ex_2_img_1", "caption_0": "green on yellow",
     "caption_1": "yellow on green", "tag": "Noun", "secondary_tag": "", "num_main_preds": 2,
     "collapsed_tag": "Object"},
]
COLORS = {0: ((200, 20, 20), (20, 20, 200)), 1: ((240, 240, 240), (10, 10, 10)), 2: ((20, 180, 20), (230, 230, 20))}


@pytest.fixture()
def hub_folder(tmp_path):
    """The dataset repo as cloned: data/examples.jsonl and the unzipped data/images/."""
    root = tmp_path / "winoground"
    for row in ROWS:
        for k in (0, 1):
            solid(root / "data" / "images" / f"{row[f'image_{k}']}.png", COLORS[row["id"]][k])
    (root / "data" / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return root


def _png_bytes(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def parquet_file(tmp_path):
    """The Hub's parquet export: image_0/image_1 as struct<bytes: binary, path: string>."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct({"bytes": pa.binary(), "path": pa.string()})
    columns = {key: [r[key] for r in ROWS] for key in ROWS[0]}
    for k in (0, 1):
        columns[f"image_{k}"] = pa.array([{"bytes": _png_bytes(COLORS[r["id"]][k]), "path": f"{r[f'image_{k}']}.png"}
                                          for r in ROWS], type=image)
    path = tmp_path / "wg-parquet" / "default" / "test" / "0000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_each_row_is_a_2x2_matrix_with_image_k_matching_caption_k(hub_folder):
    items = load_benchmark("winoground", hub_folder)
    assert len(items) == 3 and all(i.kind == "matrix" for i in items)
    first = items[0]
    assert [p.name for p in first.images] == ["ex_0_img_0.png", "ex_0_img_1.png"]
    assert first.texts == ("a red square left of a blue circle", "a blue square left of a red circle")
    assert [i.tag for i in items] == ["Relation", "Object", "Object"]  # collapsed_tag, the paper's categories
    assert [i.tag for i in load_benchmark("winoground-tag", hub_folder)] == ["Adjective-Color", "Noun", "Noun"]
    assert [i.tag for i in load_benchmark("winoground-secondary", hub_folder)] == ["none", "Symbolic", "none"]


def test_parquet_layout_gives_the_same_items_with_images_written_once(parquet_file, hub_folder, tmp_path):
    out = tmp_path / "out" / "wg.jsonl"
    from_parquet = load_benchmark("winoground", parquet_file.parents[2], write_jsonl=out)
    from_jsonl = load_benchmark("winoground", hub_folder)
    assert [(i.texts, i.tag) for i in from_parquet] == [(i.texts, i.tag) for i in from_jsonl]
    for a, b in zip(from_parquet, from_jsonl):  # same pixels in the same order: image k still matches caption k
        assert [Image.open(p).getpixel((0, 0)) for p in a.images] == [Image.open(p).getpixel((0, 0)) for p in b.images]
    made = sorted((tmp_path / "out" / "wg-images").iterdir())
    assert len(made) == 6 and all(p.suffix == ".png" for p in made)
    load_benchmark("winoground", parquet_file, write_jsonl=out)  # content-keyed: a re-run adds nothing
    assert sorted((tmp_path / "out" / "wg-images").iterdir()) == made


def test_eval_reports_winoground_scores_per_tag(hub_folder, tmp_path):
    out = tmp_path / "wg.jsonl"
    doc, rows = json_rows(run_eval("--benchmark", "winoground", str(hub_folder), "--write-jsonl", str(out),
                                   *DEMO_CLIP))
    assert doc["kinds"] == {"matrix": 3} and doc["pairs"] == 12
    assert rows[("Object", "group")]["n"] == 2 and rows[("Relation", "text")]["n"] == 1
    _, again = json_rows(run_eval(str(out), *DEMO_CLIP))
    assert again == rows


def test_max_per_tag_slices_by_the_chosen_tag(hub_folder):
    doc, rows = json_rows(run_eval("--benchmark", "winoground", str(hub_folder), "--max-per-tag", "1", *DEMO_CLIP))
    assert doc["items"] == 2 and rows[("Object", "group")]["n"] == 1


def test_malformed_line_names_the_file_and_line(hub_folder):
    lines = (hub_folder / "data" / "examples.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**ROWS[1], "caption_1": 7})
    (hub_folder / "data" / "examples.jsonl").write_text("\n".join(lines) + "\n")
    result = run_eval("--benchmark", "winoground", str(hub_folder), *NO_MODELS)
    assert result.exit_code == 1
    assert 'examples.jsonl line 2: "caption_1" must be a non-empty string.' in result.output


def test_malformed_parquet_row_names_the_file_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct({"bytes": pa.binary(), "path": pa.string()})
    good = {"bytes": _png_bytes((1, 2, 3)), "path": "a.png"}
    table = pa.table({"image_0": pa.array([good, {"bytes": None, "path": None}], type=image),
                      "image_1": pa.array([good, good], type=image), "caption_0": ["a b", "c d"],
                      "caption_1": ["b a", "d c"], "collapsed_tag": ["Object", "Object"]})
    pq.write_table(table, tmp_path / "test.parquet")
    result = run_eval("--benchmark", "winoground", str(tmp_path / "test.parquet"), *NO_MODELS,
                      "--write-jsonl", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 1
    assert 'test.parquet row [1]: "image_0" holds neither image bytes nor a path.' in result.output


def test_missing_images_are_listed_once_with_a_count(hub_folder, tmp_path):
    for name in ("ex_1_img_0.png", "ex_1_img_1.png", "ex_2_img_1.png"):
        (hub_folder / "data" / "images" / name).unlink()
    result = run_eval("--benchmark", "winoground", str(hub_folder), *DEMO_CLIP)
    doc, _ = json_rows(result)
    assert doc["items"] == 1
    warnings = [line for line in result.stderr.splitlines() if "cannot be used" in line]
    assert warnings == [f"warning: 3 images under {hub_folder / 'data' / 'images'} cannot be used: "
                        "ex_1_img_0.png (file not found), ex_1_img_1.png (file not found), ex_2_img_1.png "
                        "(file not found); 2 items that need them are skipped."]


def test_a_folder_that_is_not_winoground_is_one_sentence(tmp_path):
    result = run_eval("--benchmark", "winoground", str(tmp_path), *NO_MODELS)
    assert result.exit_code == 1 and "is not Winoground as published" in result.output
