"""The figures `discff eval` reports: ranks, Winoground scores, Wilson intervals, per-tag rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from discff_cli.evaluation.items import IMAGE_TO_TEXTS, MATRIX, TEXT_TO_IMAGES, Item
from discff_cli.evaluation.evaluate import PairTable, choice_rank, item_outcomes, matrix_outcomes, summarise
from discff_cli.evaluation.stats import wilson


def test_choice_rank_counts_ties_against_the_answer():
    assert choice_rank(np.array([0.9, 0.1, 0.3]), 0) == 1
    assert choice_rank(np.array([0.2, 0.1, 0.3]), 0) == 2
    assert choice_rank(np.array([0.5, 0.5]), 0) == 2  # a constant scorer never gets credit
    assert choice_rank(np.array([0.5, 0.5]), 1) == 2


def test_winoground_text_image_and_group_scores():
    # image 0 prefers text 0, image 1 prefers text 1; but text 1 prefers image 0.
    s = np.array([[0.9, 0.8], [0.1, 0.2]])
    assert matrix_outcomes(s) == {"text": True, "image": False, "group": False}
    assert matrix_outcomes(np.array([[0.9, 0.1], [0.2, 0.8]])) == {"text": True, "image": True, "group": True}
    assert matrix_outcomes(np.array([[0.1, 0.9], [0.8, 0.2]])) == {"text": False, "image": False, "group": False}


def test_wilson_interval_matches_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.9630, abs=1e-4)


def _item(line, kind, n, tag, answer=0):
    images = tuple(Path(f"/x/{line}_{i}.png") for i in range(n if kind != IMAGE_TO_TEXTS else 1))
    texts = tuple(f"t{line}_{i}" for i in range(n if kind != TEXT_TO_IMAGES else 1))
    return Item(line, kind, images, texts, None if kind == MATRIX else answer, tag)


def test_pair_table_scores_shared_pairs_once_and_maps_items_back():
    a = _item(1, IMAGE_TO_TEXTS, 3, "x")
    b = Item(2, TEXT_TO_IMAGES, a.images + (Path("/x/other.png"),), (a.texts[1],), 0, "x")
    table = PairTable.of([a, b])
    assert len(table.images) == 3 + 1  # (img, t1) is shared by both items
    scores = np.arange(len(table.images), dtype=float)
    assert table.item_scores(a, scores).tolist() == [0, 1, 2]
    assert table.item_scores(b, scores).tolist() == [1, 3]
    m = _item(3, MATRIX, 2, "y")
    table = PairTable.of([m])
    assert table.item_scores(m, np.array([1.0, 2.0, 3.0, 4.0])).tolist() == [[1, 2], [3, 4]]


def test_summary_rows_per_tag_then_all_with_chance_and_intervals():
    items = [_item(i, IMAGE_TO_TEXTS, 12, "single") for i in range(4)] + [_item(10 + i, MATRIX, 2, "swap")
                                                                           for i in range(2)]
    good = [item_outcomes(it, np.eye(2) if it.kind == MATRIX else np.eye(12)[0]) for it in items]
    bad = [item_outcomes(it, -np.eye(2) if it.kind == MATRIX else -np.eye(12)[0]) for it in items]
    rows = summarise(items, {"clip": good, "discffusion": bad})
    keys = [(r["tag"], r["metric"]) for r in rows]
    assert keys == [("single", "accuracy"), ("single", "R@5"), ("swap", "text"), ("swap", "image"),
                    ("swap", "group"), ("all", "accuracy"), ("all", "R@5"), ("all", "text"), ("all", "image"),
                    ("all", "group")]
    first = rows[0]
    assert first["n"] == 4 and first["chance"] == pytest.approx(1 / 12, abs=1e-4)
    assert first["clip"]["value"] == 1.0 and first["discffusion"]["value"] == 0.0
    assert first["clip"]["ci95"][0] < 1.0 and first["discffusion"]["ci95"][1] > 0.0
    assert rows[4]["chance"] == pytest.approx(1 / 6, abs=1e-4)


def test_mcnemar_exact_p_values():
    from discff_cli.evaluation.stats import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2 ** 10)
    assert mcnemar_exact(0, 10) == mcnemar_exact(10, 0)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 2 ** 10)
    assert mcnemar_exact(26, 14) == pytest.approx(0.0807, abs=1e-4)  # R: binom.test(14, 40)$p.value


def test_paired_change_counts_items_won_and_lost_on_the_same_items():
    from discff_cli.evaluation.evaluate import paired_change

    before = [{"accuracy": a} for a in (True, True, False, False, False)]
    after = [{"accuracy": a} for a in (True, False, True, True, False)]
    change = paired_change(before, after, [0, 1, 2, 3, 4], "accuracy")
    assert (change["gained"], change["lost"]) == (2, 1)
    assert change["p_value"] == 1.0
    assert 0 < paired_change([{"accuracy": False}] * 60, [{"accuracy": True}] * 60, list(range(60)),
                             "accuracy")["p_value"] < 1e-15  # a large gain is not rounded to p = 0
