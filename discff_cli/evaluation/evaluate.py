"""`discff eval` as a library: score every pair an eval file needs, then turn scores into metrics.

Why this shape: CLIP and Discffusion score the *same* de-duplicated list of (image, text)
pairs, so the two columns of the report come from one run on identical inputs, and a pair
shared by several items (the same image against the same caption) is scored once.

Metrics (every one is a proportion of items, so its 95% interval is a Wilson score interval):
- choice items ("answer"): accuracy = R@1 and, when an item has more than 5 candidates, R@5.
  Ties count against the answer (a constant scorer gets 0, not 100%).
- matrix items (image i matches text i): Winoground's text score (each image ranks its own
  text first), image score (each text ranks its own image first) and group score (both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from discff_cli.evaluation.items import IMAGE_TO_TEXTS, MATRIX, Item
from discff_cli.evaluation.stats import p_value, wilson
from discff_cli.render.progress import progress_bar

PairScorer = Callable[[list, list], np.ndarray]
ALL = "all"


# ----------------------------------------------------------------------------- pairs


@dataclass
class PairTable:
    """The distinct (image, text) pairs of a run and where each item's pairs sit in it."""

    images: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    index: dict = field(default_factory=dict)

    @classmethod
    def of(cls, items: Sequence[Item]) -> "PairTable":
        table = cls()
        for item in items:
            for img, txt in item.pairs():
                if (img, txt) not in table.index:
                    table.index[(img, txt)] = len(table.images)
                    table.images.append(img)
                    table.texts.append(txt)
        return table

    def item_scores(self, item: Item, scores: np.ndarray) -> np.ndarray:
        """An item's scores: [n, n] (image x text) for a matrix item, [n candidates] otherwise."""
        values = np.array([scores[self.index[p]] for p in item.pairs()], dtype=np.float64)
        return values.reshape(len(item.images), len(item.texts)) if item.kind == MATRIX else values


# ----------------------------------------------------------------------------- per-item outcomes


def choice_rank(scores: np.ndarray, answer: int) -> int:
    """1-based rank of the answer; every other candidate scoring >= it ranks ahead (ties count against)."""
    others = np.delete(scores, answer)
    return 1 + int(np.sum(others >= scores[answer]))


def matrix_outcomes(s: np.ndarray) -> dict[str, bool]:
    """Winoground scores of an [n images, n texts] matrix whose diagonal holds the matches."""
    n = s.shape[0]
    diag = np.diag(s)
    off = ~np.eye(n, dtype=bool)
    text_ok = all(np.all(diag[i] > s[i, off[i]]) for i in range(n))      # image i prefers text i
    image_ok = all(np.all(diag[j] > s[off[:, j], j]) for j in range(n))  # text j prefers image j
    return {"text": bool(text_ok), "image": bool(image_ok), "group": bool(text_ok and image_ok)}


def item_outcomes(item: Item, scores: np.ndarray) -> dict[str, bool]:
    if item.kind == MATRIX:
        return matrix_outcomes(scores)
    rank = choice_rank(scores, item.answer)
    out = {"accuracy": rank == 1}
    if item.n_candidates > 5:
        out["R@5"] = rank <= 5
    return out


def chance(item: Item, metric: str) -> float:
    """Expected outcome of a scorer that ranks at random (ties impossible)."""
    n = item.n_candidates
    if metric == "accuracy":
        return 1.0 / n
    if metric == "R@5":
        return min(5, n) / n
    if metric in ("text", "image"):
        return (1.0 / n) ** n
    return 1.0 / 6.0 if n == 2 else float("nan")  # group score: 1/6 for 2x2 (Winoground paper)



def paired_change(before: list[dict[str, bool]], after: list[dict[str, bool]], having: list[int],
                  metric: str) -> dict:
    """Items `after` gets right that `before` got wrong (gained), the reverse (lost), and McNemar's p."""
    gained = sum(after[i][metric] and not before[i][metric] for i in having)
    lost = sum(before[i][metric] and not after[i][metric] for i in having)
    return {"gained": gained, "lost": lost, "p_value": p_value(gained, lost)}


METRIC_ORDER = ("accuracy", "R@5", "text", "image", "group")


def summarise(items: Sequence[Item], outcomes: dict[str, list[dict[str, bool]]],
              paired: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """Rows of (tag, metric): n, chance and, per system, value with its Wilson interval.

    `outcomes[system][i]` are item i's outcomes. Tags are listed in order of first
    appearance, then an "all" row per metric when the file has more than one tag.
    `paired=[(before, after), ...]` adds each row's paired changes from one system to another.
    """
    tags = list(dict.fromkeys(item.tag for item in items))
    groups = [(tag, [i for i, it in enumerate(items) if it.tag == tag]) for tag in tags]
    if len(tags) > 1:
        groups.append((ALL, list(range(len(items)))))
    rows = []
    for tag, idx in groups:
        for metric in METRIC_ORDER:
            having = [i for i in idx if metric in _first(outcomes)[i]]
            if not having:
                continue
            row = {"tag": tag, "metric": metric, "n": len(having),
                   "chance": _round(float(np.mean([chance(items[i], metric) for i in having])))}
            for system, per_item in outcomes.items():
                hits = sum(per_item[i][metric] for i in having)
                lo, hi = wilson(hits, len(having))
                row[system] = {"value": _round(hits / len(having)), "ci95": [_round(lo), _round(hi)], "hits": hits}
            if paired:
                row["paired"] = [{"systems": [before, after],
                                  **paired_change(outcomes[before], outcomes[after], having, metric)}
                                 for before, after in paired]
            rows.append(row)
    return rows


def _first(outcomes: dict[str, list[dict[str, bool]]]) -> list[dict[str, bool]]:
    return next(iter(outcomes.values()))


def _round(x: float) -> float:
    return round(x, 4) if not math.isnan(x) else x


# ----------------------------------------------------------------------------- scorers


def outcomes_for(items: Sequence[Item], table: PairTable, scores: np.ndarray) -> list[dict[str, bool]]:
    return [item_outcomes(item, table.item_scores(item, scores)) for item in items]


def clip_pair_scores(clip, table: PairTable, progress: bool = False) -> np.ndarray:
    """Cosine similarity of each pair: every distinct image and text embedded once."""
    from index.imageio import open_rgb

    images = list(dict.fromkeys(table.images))
    texts = list(dict.fromkeys(table.texts))
    image_row = {img: i for i, img in enumerate(images)}
    text_row = {txt: i for i, txt in enumerate(texts)}
    chunks = []
    with progress_bar("CLIP images", len(images), progress) as bar:
        for start in range(0, len(images), 64):
            batch = images[start:start + 64]
            chunks.append(clip.embed_images([open_rgb(p) for p in batch]))
            bar.advance(len(batch))
    image_emb = np.concatenate(chunks)
    text_emb = clip.embed_texts(texts)
    rows = np.array([image_row[p] for p in table.images])
    cols = np.array([text_row[t] for t in table.texts])
    return np.einsum("nd,nd->n", image_emb[rows], text_emb[cols]).astype(np.float64)


def diffusion_outcomes(scorer, items: Sequence[Item], table: PairTable, families: Sequence[str],
                       progress: bool = False) -> tuple[dict[str, list[dict[str, bool]]], dict]:
    """Each family's per-item outcomes and what they cost, through the one rank path (engine/rank.py).

    Full grid: every distinct pair of the run once, every family from the same passes. With
    `config.prune` each choice item is one query whose candidates are pruned (successive halving);
    a matrix item's outcomes compare every pair with every other, so it is scored on the full grid."""
    families = tuple(families)
    if not scorer.config.prune:
        with progress_bar("scoring", enabled=progress, unit="U-Net items") as bar:
            ranking = scorer.rank([str(p) for p in table.images], list(table.texts), families, prune=False,
                                  progress=bar.update)
        _check_readable(ranking, table.images)
        return {f: outcomes_for(items, table, ranking.scores[f]) for f in families}, ranking.stats()
    outcomes: dict[str, list[dict[str, bool]]] = {f: [] for f in families}
    totals: dict[str, int] = {}
    with progress_bar("items", len(items), progress) as bar:
        for item in items:
            pairs = item.pairs()
            images = [str(img) for img, _ in pairs]
            ranking = scorer.rank(images, [txt for _, txt in pairs], families, prune=item.kind != MATRIX)
            _check_readable(ranking, images)
            for f in families:
                values = np.asarray(ranking.scores[f], dtype=np.float64)
                if item.kind == MATRIX:
                    values = values.reshape(len(item.images), len(item.texts))
                outcomes[f].append(item_outcomes(item, values))
            for key, value in ranking.stats().items():
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
            bar.advance()
    return outcomes, totals


def _check_readable(ranking, images: Sequence) -> None:
    """An eval file's image that cannot be decoded is one sentence, not a silently shorter item."""
    if ranking.unreadable:
        from discff_cli.errors import DiscffError

        position, error = next(iter(ranking.unreadable.items()))
        raise DiscffError(f"Cannot read image '{images[position]}': {error}.")


def item_kinds(items: Sequence[Item]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    return counts


__all__ = ["PairTable", "choice_rank", "matrix_outcomes", "item_outcomes", "summarise", "outcomes_for",
           "clip_pair_scores", "diffusion_outcomes", "IMAGE_TO_TEXTS"]
