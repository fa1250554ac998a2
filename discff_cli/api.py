"""The Python API: the same rerank path as the CLI, for notebooks and scripts.

    from discff_cli.api import open_index, load_scorer

    index = open_index(".discff", model="demo", prune=True)      # models load on first use
    result = index.search("a red cube left of a blue ball", top=5, rerank=20)
    result.rows[0]["path"], result.stats["unet_passes"]

    scorer = load_scorer("demo", steps=5, levels=(0.5,))
    ranking = scorer.rank(["a.png", "a.png"], ["a red cube", "a blue cube"], ("discffusion", "diffusion_itm"))
    ranking.scores["discffusion"], ranking.unet_passes

`discff search` opens its index with `open_index` and `discff score` loads its scorer with
`load_scorer`, so what a notebook computes is what the commands print. Engine settings are the
fields of `EngineConfig` (steps, levels, seed, layers, lse_lambda, device, batch_size, mask_padding,
prune, score) passed as keywords.
"""

from __future__ import annotations

from typing import Any

from discff_cli.engine.config import DEFAULT_MODEL, EngineConfig
from discff_cli.search.rerank import Fusion

__all__ = ["EngineConfig", "Fusion", "engine_config", "load_scorer", "open_index"]


def engine_config(**settings: Any) -> EngineConfig:
    """An EngineConfig from keywords (levels and timesteps may be any sequence)."""
    for key in ("levels", "timesteps"):
        if settings.get(key) is not None:
            settings[key] = tuple(settings[key])
    return EngineConfig(**settings)


def open_index(index_dir: str = ".discff", model: str | None = None, clip: str | None = None,
               deltas: str | None = None, fusion: Fusion = Fusion(), config: EngineConfig | None = None,
               **settings: Any):
    """A `pipeline.Searcher` over the index at `index_dir`: `.search(query, top, rerank, score=...)`
    returns a `SearchResult` (rows as `discff search --json` prints them, and their stats).

    `model` defaults to the one the index was built with; `settings` are EngineConfig fields."""
    from discff_cli.search.pipeline import Searcher

    return Searcher(index_dir, clip, model, deltas, config or engine_config(**settings), fusion)


def load_scorer(model: str = DEFAULT_MODEL, deltas: str | None = None, config: EngineConfig | None = None,
                **settings: Any):
    """A loaded `engine.scorer.Scorer`; `.rank(images, texts, families, prune=...)` scores pairs."""
    from discff_cli.engine.scorer import load_scorer as load

    return load(model, config or engine_config(**settings), deltas)
