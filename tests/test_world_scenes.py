"""The demo world: captions say what the picture shows, negatives do not, and it is reproducible."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from training import world as w

CAPTION = re.compile(r"^a (\w+) (\w+) (left of|to the left of|right of|to the right of|above|over|below|under) a (\w+) (\w+)$")
PHRASE_TO_REL = {"left of": "left of", "to the left of": "left of", "right of": "right of",
                 "to the right of": "right of", "above": "above", "over": "above", "below": "below", "under": "below"}


def _geometric_relation(a: w.Obj, b: w.Obj) -> str:
    """The relation of a to b read from the boxes alone (independent of the generator's label)."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _is_true(text: str, scene: w.Scene) -> bool:
    """Parse a caption and check it against the scene's objects and geometry."""
    if len(scene.objects) == 1:
        o = scene.objects[0]
        return text in {t.format(c=o.colour, s=o.shape) for t in w.SINGLE_TEMPLATES}
    m = CAPTION.match(text)
    assert m, text
    c1, s1, phrase, c2, s2 = m.groups()
    by_desc = {(o.colour, o.shape): o for o in scene.objects}
    if (c1, s1) not in by_desc or (c2, s2) not in by_desc or (c1, s1) == (c2, s2):
        return False
    return _geometric_relation(by_desc[(c1, s1)], by_desc[(c2, s2)]) == PHRASE_TO_REL[phrase]


def _scenes(n: int, seed: int = 0) -> list[w.Scene]:
    rng = random.Random(seed)
    return [w.sample_scene(rng) for _ in range(n)]


def test_every_caption_is_true_and_every_hard_negative_false():
    scenes = _scenes(300)
    assert {len(s.objects) for s in scenes} == {1, 2}
    for scene in scenes:
        assert all(_is_true(c, scene) for c in w.captions(scene))
        negatives = w.hard_negatives(scene)
        expected = {"replaced_attribute"} | ({"attribute_swap", "shape_swap", "relation_swap"}
                                             if len(scene.objects) == 2 else set())
        assert set(negatives) == expected
        for tag, texts in negatives.items():
            assert texts, tag
            assert not any(_is_true(t, scene) for t in texts), (tag, scene)


def test_two_object_negatives_align_with_captions_template_by_template():
    """negative j differs from caption j only in the tag's detail, so a pair isolates that detail."""
    for scene in [w.sample_scene(random.Random(s), n_objects=2) for s in range(20)]:
        negatives = w.hard_negatives(scene)
        for j, true in enumerate(w.captions(scene)):
            c1, s1, phrase, c2, s2 = CAPTION.match(true).groups()
            assert CAPTION.match(negatives["attribute_swap"][j]).groups() == (c2, s1, phrase, c1, s2)
            assert CAPTION.match(negatives["shape_swap"][j]).groups() == (c1, s2, phrase, c2, s1)
            r = CAPTION.match(negatives["relation_swap"][j]).groups()
            assert (r[0], r[1], r[3], r[4]) == (c1, s1, c2, s2)
            assert PHRASE_TO_REL[r[2]] == w.INVERSE[PHRASE_TO_REL[phrase]]


def test_objects_stay_inside_the_image_and_apart():
    for scene in _scenes(500, seed=1):
        for o in scene.objects:
            assert w.MIN_SIZE <= o.size <= w.MAX_SIZE
            assert o.size / 2 <= o.cx <= w.SIZE - o.size / 2 and o.size / 2 <= o.cy <= w.SIZE - o.size / 2
        if len(scene.objects) == 2:
            a, b = scene.objects
            assert (a.colour, a.shape) != (b.colour, b.shape) and a.colour != b.colour and a.shape != b.shape
            assert _geometric_relation(a, b) == scene.relation
            gap_x = abs(a.cx - b.cx) - (a.size + b.size) / 2
            gap_y = abs(a.cy - b.cy) - (a.size + b.size) / 2
            assert max(gap_x, gap_y) >= w.GAP - 1e-9  # boxes never overlap


def test_render_is_64px_rgb_with_a_light_gray_background():
    img = w.render(w.sample_scene(random.Random(0), 1), random.Random(0))
    assert img.size == (64, 64) and img.mode == "RGB"
    corner = np.asarray(img)[:2, :2].astype(int)
    assert corner.min() > 170 and np.ptp(corner, axis=-1).max() < 12  # gray: channels nearly equal


def test_splits_are_deterministic_prefix_stable_and_distinct():
    a = w.make_split("train", 12, seed=0)
    b = w.make_split("train", 12, seed=0)
    assert [e.caption for e in a] == [e.caption for e in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    prefix = w.make_split("train", 5, seed=0)
    assert [e.scene for e in prefix] == [e.scene for e in a[:5]]
    test = w.make_split("test", 12, seed=0)
    other_seed = w.make_split("train", 12, seed=1)
    assert {e.scene for e in a}.isdisjoint({e.scene for e in test})
    assert {e.scene for e in a}.isdisjoint({e.scene for e in other_seed})
    with pytest.raises(ValueError):
        w.make_split("holdout", 1)


def test_checker_recognises_rendered_scenes():
    examples = w.make_split("val", 400)
    ok = [w.check_image(e.image, e.scene)["ok"] for e in examples]
    assert np.mean(ok) >= 0.99


def test_checker_rejects_images_of_other_scenes():
    """Each flag fails where it should: a wrong colour, a wrong shape, a reversed relation."""
    rng = random.Random(7)
    rejected = {"colour_ok": 0, "shape_ok": 0, "relation_ok": 0}
    n = 60
    for _ in range(n):
        scene = w.sample_scene(rng, n_objects=2)
        img = w.render(scene, rng)
        a, b = scene.objects
        other_colour = next(c for c in w.COLOURS if c not in (a.colour, b.colour))
        rejected["colour_ok"] += not w.check_image(img, w._with(scene, 0, w.replace(a, colour=other_colour)))["colour_ok"]
        rejected["shape_ok"] += not w.check_image(img, w.swap_shapes(scene))["shape_ok"]
        rejected["relation_ok"] += not w.check_image(img, w.reverse_relation(scene))["relation_ok"]
    assert all(v >= 0.97 * n for v in rejected.values()), rejected


def test_single_object_checker_flags():
    scene = w.sample_scene(random.Random(11), n_objects=1)
    img = w.render(scene, random.Random(11))
    assert w.check_image(img, scene) == {"colour_ok": True, "shape_ok": True, "relation_ok": True, "ok": True}
    blank = w.render(w.Scene((), None), random.Random(0))
    assert w.check_image(blank, scene)["ok"] is False
