"""The rerank stage alone: "rerank this head of a shortlist for this query" with one loaded scorer.

Why its own module: the local Searcher (discff_cli/search/pipeline.py), every Ray actor
(discff_cli/search/ray.py), the service and the demo's gallery measurement (discff_cli/evaluation/gallery.py)
all hold a `Reranker` and call the same `rerank`, so they compute the same thing and `--prune` means
the same everywhere; neither the pipeline nor the Ray path imports the other to get it.

One rerank: the content key of each candidate file computed once, stored latents and empty-prompt
readings (`index build --latents`) put in the scorer's caches by that key, then `Scorer.rank`
(engine/rank.py: one decode per file that is not stored, full grid or successive halving), then the
fusion with CLIP (fusion.py). A file that no longer decodes is learnt from that decode and keeps its
CLIP place after the reranked ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from discff_cli.render.progress import progress_bar
from discff_cli.search.fusion import DEFAULT_FUSION, DEFAULT_WEIGHT, final_order, fuse


@dataclass(frozen=True)
class Fusion:
    """How the final order combines CLIP and the rerank score (fusion.py)."""

    method: str = DEFAULT_FUSION
    weight: float = DEFAULT_WEIGHT


@dataclass
class Reranked:
    """One query's reranked head; picklable, so a Ray actor returns exactly what a local rerank does."""

    hits: list                # the readable head in the final (fused) order, then the unreadable in CLIP order
    scores: dict[int, float]  # index row -> rerank score of the first family (the one that orders `hits`)
    unreadable: list          # hits whose file can no longer be decoded (not reranked)
    stats: dict[str, Any]     # U-Net passes actually spent (engine/rank.py Ranking.stats), seconds
    family_scores: dict[str, dict[int, float]] = field(default_factory=dict)  # every family asked for
    fused: dict[int, float] = field(default_factory=dict)  # index row -> the fused score that decided the order
    fusion: Fusion = Fusion()  # the fusion that produced `fused`

    @property
    def unet_passes(self) -> int:
        return int(self.stats["unet_passes"])


class Reranker:
    """Reranks heads of shortlists with one scorer; holds nothing between queries but its caches."""

    def __init__(self, scorer: Any, index_dir: str, fusion: Fusion) -> None:
        self.scorer, self.index_dir, self.fusion = scorer, index_dir, fusion

    def rerank(self, query: str, head: list, families: Sequence[str], progress: bool = False,
               prune: bool | None = None, fusion: Fusion | None = None) -> Reranked:
        """Rerank `head` (index.search.Hit, CLIP order) for `query`; `families[0]` orders the result,
        the others are read from the same passes (pruned: from the same memo, engine/rank.py).
        `prune` defaults to the scorer's `config.prune` (`--prune`); `fusion` overrides this
        reranker's fusion for one query (the page lets a user pick it)."""
        start = time.perf_counter()
        fusion = fusion or self.fusion
        keys, missing = candidate_keys(head)
        present = [h for i, h in enumerate(head) if i not in missing]
        self._seed_store(present, [keys[i] for i in range(len(head)) if i not in missing])
        with progress_bar("scoring", enabled=progress, unit="U-Net items") as bar:
            ranking = self.scorer.rank([h.path for h in present], [query] * len(present), families,
                                       prune=prune, keys=[k for k in keys if k is not None], progress=bar.update)
        readable = [present[i] for i in ranking.readable]
        unreadable = [h for i, h in enumerate(head) if i in missing] + \
            [present[i] for i in sorted(ranking.unreadable)]
        unreadable.sort(key=lambda h: h.rank)
        values = ranking.scores[families[0]]
        clip = [h.clip_score for h in readable]
        order = final_order(clip, values, fusion.method, fusion.weight) if readable else []
        fused = fuse(clip, values, fusion.method, fusion.weight) if readable else []
        family_scores = {f: {h.row: float(v) for h, v in zip(readable, ranking.scores[f])} for f in families}
        return Reranked(hits=[readable[i] for i in order] + unreadable, scores=family_scores[families[0]],
                        unreadable=unreadable, family_scores=family_scores,
                        fused={h.row: float(v) for h, v in zip(readable, fused)}, fusion=fusion,
                        stats={**ranking.stats(), "seconds": round(time.perf_counter() - start, 4)})

    def _seed_store(self, hits: list, keys: list[str]) -> None:
        """With `index build --latents`: no VAE and no empty-prompt passes for the stored candidates."""
        from discff_cli.engine.latent_store import seed_from_store

        seed_from_store(self.scorer, self.index_dir, [h.path for h in hits], keys=keys)


def candidate_keys(head: list) -> tuple[list[str | None], set[int]]:
    """The content key of each hit's file (one read, one hash), and the positions of files that vanished."""
    from discff_cli.engine.preprocess import image_key

    keys: list[str | None] = []
    missing: set[int] = set()
    for i, hit in enumerate(head):
        try:
            keys.append(image_key(hit.path))
        except OSError:
            keys.append(None)
            missing.add(i)
    return keys, missing
