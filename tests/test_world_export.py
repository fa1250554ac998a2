"""`python -m training.world export-eval/export-fewshot` write files that describe their images truly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from training import world as w
from training.world.export import export_eval

REPO = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scene_of(dir_: Path, rel: str) -> w.Scene:
    """Recover the test scene of an exported image from its file name (test_<index>.png)."""
    index = int(Path(rel).stem.split("_")[1])
    return w.make_example("test", index).scene


def test_export_eval_writes_every_tag_with_true_answers(tmp_path):
    counts = export_eval(tmp_path, n_per_tag=6)
    assert counts == {"single_object": 6, "single_object_t2i": 6, "attribute_swap": 6, "relation_swap": 6,
                      "shape_swap": 6, "winoground": 18}
    for tag in ("single_object", "attribute_swap", "relation_swap", "shape_swap"):
        for item in _lines(tmp_path / f"{tag}.jsonl"):
            assert item["tag"] == tag
            img = Image.open(tmp_path / item["image"])
            assert img.size == (64, 64)
            scene = _scene_of(tmp_path, item["image"])
            truth = set(w.captions(scene)) | ({f"a {scene.objects[0].colour} {scene.objects[0].shape}"})
            assert item["texts"][item["answer"]] in truth
            assert not any(t in truth for k, t in enumerate(item["texts"]) if k != item["answer"])
    # answers are not always in the same slot (a scorer that always picks slot 0 must not win)
    answers = {item["answer"] for item in _lines(tmp_path / "attribute_swap.jsonl")}
    assert answers == {0, 1}


def test_text_to_image_items_offer_one_image_of_every_colour_and_shape_and_only_the_answer_matches(tmp_path):
    export_eval(tmp_path, n_per_tag=4)
    for item in _lines(tmp_path / "single_object_t2i.jsonl"):
        assert item["tag"] == "single_object_t2i" and len(item["images"]) == 12
        shown = []
        for name in item["images"]:
            obj = _scene_of(tmp_path, name).objects
            assert len(obj) == 1
            shown.append(f"a {obj[0].colour} {obj[0].shape}")
        assert sorted(shown) == sorted(f"a {c} {s}" for c in w.COLOURS for s in w.SHAPES)
        assert shown[item["answer"]] == item["text"]


def test_winoground_counterpart_images_show_their_own_caption(tmp_path):
    export_eval(tmp_path, n_per_tag=5)
    items = _lines(tmp_path / "winoground.jsonl")
    assert {i["tag"] for i in items} == {"attribute_swap", "relation_swap", "shape_swap"}
    for item in items:
        assert len(item["images"]) == len(item["texts"]) == 2 and item["texts"][0] != item["texts"][1]
        scene = _scene_of(tmp_path, item["images"][0])
        assert item["texts"][0] in w.captions(scene)
        assert item["texts"][1] in w.hard_negatives(scene)[item["tag"]]
        # The counterpart image passes the pixel checker for the negative caption's scene.
        counterpart = Image.open(tmp_path / item["images"][1])
        assert not w.check_image(counterpart, scene)["ok"]


def test_export_fewshot_cli_writes_lines_with_images_next_to_it(tmp_path):
    out = tmp_path / "few.jsonl"
    proc = subprocess.run([sys.executable, "-m", "training.world", "export-fewshot", str(out), "--fraction", "0.001"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = _lines(out)
    assert len(rows) == 20
    train = w.make_split("train", 20)
    for row, ex in zip(rows, train):
        assert row["text"] == ex.caption and row["negative_texts"]
        assert not set(row["negative_texts"]) & set(w.captions(ex.scene))
        assert (tmp_path / row["image"]).is_file()


def test_swaps_only_fewshot_keeps_two_object_scenes_and_their_three_swaps(tmp_path):
    from training.world.export import export_fewshot

    n = export_fewshot(tmp_path / "swaps.jsonl", fraction=0.002, swaps_only=True)
    rows = _lines(tmp_path / "swaps.jsonl")
    train = [ex for ex in w.make_split("train", 40) if len(ex.scene.objects) == 2]
    assert n == len(rows) == len(train) > 0
    for row, ex in zip(rows, train):
        j = w.captions(ex.scene).index(ex.caption)
        negatives = w.hard_negatives(ex.scene)
        assert row["text"] == ex.caption and row["tag"] == "two_objects"
        assert row["negative_texts"] == [negatives[t][j] for t in ("attribute_swap", "relation_swap", "shape_swap")]
