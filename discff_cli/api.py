"""The Python API: the same rerank path as the CLI, for notebooks and scripts.

    from discff_cli.api import open_index, load_scorer

    index = open_index(".discff", model="demo", prune=True)      # models load on first use
    doc = index.run("a red cube left of a blue ball", top=5, rerank=20)
    doc["results"][0]["path"], doc["stats"]["unet_passes"]     # what `discff search --json` prints
    print(to_json(doc))                                         # ... serialised as it prints it

    scorer = load_scorer("demo", steps=5, levels=(0.5,))
    ranking = scorer.rank(["a.png", "a.png"], ["a red cube", "a blue cube"], ("discffusion", "diffusion_itm"))
    ranking.scores["discffusion"], ranking.unet_passes

`discff search` opens its index with `open_index` and `discff score` loads its scorer with
`load_scorer`, so what a notebook computes is what the commands print. `index.run` takes a query
text with keywords, or a `SearchRequest` (checked by `search_request`, as the CLI and the service
check theirs); `index.search` returns the same rows and stats without the document around them.
With `deltas` and no `model`, the model the deltas were tuned on is loaded (`model_for_deltas`). Engine settings are the
fields of `EngineConfig` (steps, levels, seed, layers, lse_lambda, device, batch_size, mask_padding,
prune, score) passed as keywords.
"""

from __future__ import annotations

from typing import Any

from discff_cli.engine.config import DEFAULT_MODEL, EngineConfig
from discff_cli.search.request import SearchRequest, search_request
from discff_cli.search.rerank import Fusion

__all__ = ["EngineConfig", "Fusion", "SearchRequest", "engine_config", "load_scorer", "open_index", "search_request",
           "to_json"]


def engine_config(**settings: Any) -> EngineConfig:
    """An EngineConfig from keywords (levels and timesteps may be any sequence)."""
    for key in ("levels", "timesteps"):
        if settings.get(key) is not None:
            settings[key] = tuple(settings[key])
    return EngineConfig(**settings)


def open_index(index_dir: str = ".discff", model: str | None = None, clip: str | None = None,
               deltas: str | None = None, fusion: Fusion = Fusion(), config: EngineConfig | None = None,
               **settings: Any):
    """A `pipeline.Searcher` over the index at `index_dir`: `.run(query, top=, rerank=, score=, fusion=)` returns
    the `discff search --json` document; `.search(...)` a `SearchResult` (its rows and stats).

    `model` defaults to the one `deltas` records, else the one the index was built with; `settings` are
    EngineConfig fields."""
    from discff_cli.search.pipeline import Searcher

    return Searcher(index_dir, clip, model, deltas, config or engine_config(**settings), fusion)


def load_scorer(model: str | None = None, deltas: str | None = None, config: EngineConfig | None = None,
                **settings: Any):
    """A loaded `engine.scorer.Scorer`; `.rank(images, texts, families, prune=...)` scores pairs.

    `model` defaults to the one `deltas` records, else SD 2.1-base (`model_for_deltas`)."""
    from discff_cli.engine.deltas import model_for_deltas
    from discff_cli.engine.scorer import load_scorer as load

    return load(model_for_deltas(model, deltas, default=DEFAULT_MODEL), config or engine_config(**settings), deltas)


def to_json(document: Any) -> str:
    """A document as JSON text, serialised exactly as `--json` and the service do (non-finite numbers: null)."""
    from discff_cli.render.output import to_json as serialise

    return serialise(document, indent=2)[0]
