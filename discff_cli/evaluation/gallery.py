"""Does reranking beat CLIP on a gallery whose truth is known? The measurement `discff demo` prints.

The gallery is demo-world test scenes, so for any caption we know which images truly show it
(world.captions of each scene): several may, and all count. Each query goes through the product's
own pipeline (discff_cli.search.pipeline.Searcher): the CLIP shortlist, then the same `Reranker.rerank`
that `discff search --rerank` runs (discff_cli/search/rerank.py, `--prune` included), asked for every score
family at once (one set of U-Net passes, or one pruning memo), each fused with CLIP as search fuses.
Every system answers the same queries, so each is compared with CLIP alone item by item (queries
gained and lost at R@1, exact McNemar p).

Metrics per query: R@1 (the top image is a true match), R@5, and the rank of the first true match
(depth + 1 when the shortlist has none; reranking only permutes the shortlist, so that case costs
every system the same).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from discff_cli.evaluation.stats import p_value, wilson
from discff_cli.search.fusion import final_order

CLIP = "clip"


@dataclass
class GalleryQuery:
    text: str
    kind: str  # "two-object" | "single-object"


@dataclass
class SystemResult:
    """Per-query first-match ranks of one system (CLIP alone, or CLIP + rerank with one score)."""

    ranks: list[int] = field(default_factory=list)

    def hits(self, k: int) -> list[bool]:
        return [r <= k for r in self.ranks]


KINDS = {"two-object": 2, "single-object": 1}


def pick_queries(captions: Sequence[Sequence[str]], objects: Sequence[int], per_kind: int, seed: int,
                 kinds: Sequence[str] = tuple(KINDS)) -> list[GalleryQuery]:
    """`per_kind` captions of gallery scenes of each kind (one template each), drawn with `seed`."""
    rng = random.Random(seed)
    out = []
    for kind in kinds:
        n_objects = KINDS[kind]
        pool = [i for i, n in enumerate(objects) if n == n_objects]
        for i in rng.sample(pool, min(per_kind, len(pool))):
            out.append(GalleryQuery(rng.choice(list(captions[i])), kind))
    return out


@dataclass
class QueryRecord:
    """What one query measured: the shortlist's truth and CLIP scores, and every family's rerank scores."""

    kind: str
    relevant: list[bool]               # shortlist order (CLIP), True = the image truly shows the query
    clip_scores: list[float]
    scores: dict[str, np.ndarray]      # family -> rerank score per shortlisted image
    unet_passes: int = 0               # what the rerank of this query actually ran

    def first_match(self, order: Sequence[int]) -> int:
        """1-based rank of the first true match in `order` (depth + 1 when the shortlist has none)."""
        return next((rank for rank, i in enumerate(order, start=1) if self.relevant[i]), len(self.relevant) + 1)


def measure(searcher, queries: Sequence[GalleryQuery], truth: Callable[[str, str], bool], depth: int,
            families: Sequence[str], advance: Callable[[int], None] = lambda n: None,
            prune: bool | None = None) -> list[QueryRecord]:
    """Shortlist and rerank every query once through the search path, every family from the same passes
    (`prune`: successive halving, default the searcher's `--prune`).

    Shortlisted files that can no longer be read are left out of the shortlist (as search leaves them
    unreranked, with the same warning)."""
    from discff_cli.search.pipeline import SearchRequest, warn_unreadable

    records = []
    for query in queries:
        planned = searcher.shortlisted(SearchRequest(query.text, depth, depth))
        outcome = searcher.reranker().rerank(query.text, planned.head, tuple(families), prune=prune)
        warn_unreadable(outcome.unreadable)
        hits = [h for h in planned.head if h.row in outcome.scores]  # CLIP order, readable only
        records.append(QueryRecord(query.kind, [truth(h.path, query.text) for h in hits],
                                   [h.clip_score for h in hits],
                                   {f: np.array([outcome.family_scores[f][h.row] for h in hits]) for f in families},
                                   outcome.unet_passes))
        advance(1)
    return records


def with_tuned(records: Sequence[QueryRecord], tuned: Sequence[QueryRecord], family: str) -> list[QueryRecord]:
    """`records` with one more system, `family` read under tuned deltas (TUNED % family), from a second
    measurement of the same queries through the same search path (same shortlists)."""
    merged = []
    for record, other in zip(records, tuned, strict=True):
        if other.relevant != record.relevant or other.clip_scores != record.clip_scores:
            raise ValueError("the tuned measurement saw other shortlists than the zero-shot one")
        merged.append(QueryRecord(record.kind, record.relevant, record.clip_scores,
                                  {**record.scores, TUNED % family: other.scores[family]},
                                  record.unet_passes + other.unet_passes))
    return merged


TUNED = "%s tuned"


def rank_systems(records: Sequence[QueryRecord], fusion_method: str,
                 fusion_weight: float) -> dict[str, dict[str, SystemResult]]:
    """{query kind: {system: first-match ranks}} for CLIP alone and CLIP + each family, fused as search fuses."""
    results: dict[str, dict[str, SystemResult]] = {}
    for record in records:
        systems = results.setdefault(record.kind, {})
        systems.setdefault(CLIP, SystemResult()).ranks.append(record.first_match(range(len(record.relevant))))
        for family, values in record.scores.items():
            order = final_order(record.clip_scores, values, fusion_method, fusion_weight)
            systems.setdefault(family, SystemResult()).ranks.append(record.first_match(order))
    return results


SWEEP = (("none", 1.0), ("rrf", 0.5), ("zsum", 0.25), ("zsum", 0.5), ("zsum", 0.75))


def fusion_sweep(records: Sequence[QueryRecord]) -> dict[str, list[dict]]:
    """The summary under each fusion setting, from the same passes: how the default fusion was chosen."""
    return {f"{method} {weight}": summarise(rank_systems(records, method, weight)) for method, weight in SWEEP}


def summarise(results: dict[str, dict[str, SystemResult]]) -> list[dict]:
    """Rows of (query kind, system): R@1 and R@5 with Wilson intervals, mean first-match rank, paired vs CLIP."""
    rows = []
    for kind, systems in results.items():
        clip_hits = systems[CLIP].hits(1)
        for system, result in systems.items():
            n = len(result.ranks)
            row = {"queries": kind, "system": system, "n": n, "mean_rank": round(float(np.mean(result.ranks)), 3)}
            for k in (1, 5):
                hits = sum(result.hits(k))
                row[f"R@{k}"] = {"value": round(hits / n, 4), "ci95": [round(x, 4) for x in wilson(hits, n)],
                                 "hits": hits}
            if system != CLIP:
                gained = sum(h and not c for h, c in zip(result.hits(1), clip_hits))
                lost = sum(c and not h for h, c in zip(result.hits(1), clip_hits))
                row["vs_clip_R@1"] = {"gained": gained, "lost": lost,
                                      "p_value": p_value(gained, lost)}
            rows.append(row)
    return rows


def verdict(rows: list[dict], score: str) -> str:
    """One plain sentence per query kind on whether reranking with `score` helped at R@1."""
    lines = []
    for row in rows:
        if row["system"] != score:
            continue
        clip = next(r for r in rows if r["queries"] == row["queries"] and r["system"] == CLIP)
        change, delta = row["vs_clip_R@1"], row["R@1"]["value"] - clip["R@1"]["value"]
        if change["gained"] == change["lost"] == 0:
            word = "changes nothing"
        elif change["p_value"] < 0.05 and delta > 0:
            word = "helps"
        elif change["p_value"] < 0.05 and delta < 0:
            word = "HURTS"
        else:
            word = "does not clearly help" if delta >= 0 else "does not clearly hurt"
        lines.append(f"{row['queries']} queries: reranking with {score} {word} at R@1 "
                     f"({clip['R@1']['value']:.2f} -> {row['R@1']['value']:.2f}, "
                     f"+{change['gained']} -{change['lost']}, McNemar p {change['p_value']:.2g}).")
    return "\n".join(lines)


def scene_truth(paths_to_captions: dict[str, Sequence[str]]) -> Callable[[str, str], bool]:
    """`truth(path, query)`: the image at `path` truly shows `query` (matched by file name)."""
    by_name = {Path(p).name: set(caps) for p, caps in paths_to_captions.items()}
    return lambda path, query: query in by_name.get(Path(path).name, ())
