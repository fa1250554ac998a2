"""Click options shared by every command that scores, defined once so names and defaults agree."""

from __future__ import annotations

import re
from typing import Any, Callable

import click

from discff_cli.engine.config import DEFAULT_LEVELS, DEFAULT_MODEL, DEFAULT_SCORE, SCORES, EngineConfig

LAYER_PATTERN = re.compile(r"^(all|ref|down|mid|up|last-[1-9][0-9]*)$")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]{1,3})?)$")
SEED_MAX = 2**63 - 1
LSE_LAMBDA_MAX = 1e4  # beyond this LogSumExp is max pooling already, and lambda*A overflows float32 long before 1e308


def check_device(ctx: click.Context | None, param: click.Parameter | None, value: str) -> str:
    """auto, cpu, mps, cuda or cuda:N -- checked before any model loads."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value.strip()):
        raise click.BadParameter(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N")
    return value.strip()


def check_seed(ctx: click.Context | None, param: click.Parameter | None, value: int) -> int:
    """Seeds feed torch.Generator.manual_seed, which takes 0..2**63-1."""
    if not 0 <= value <= SEED_MAX:
        raise click.BadParameter(f"{value} is not in 0..{SEED_MAX} (2**63-1)")
    return value


def finite(upper: float | None = None) -> Callable:
    """A callback refusing NaN and infinities (click's FloatRange lets NaN through), and values above `upper`."""
    import math

    def check(ctx: click.Context | None, param: click.Parameter | None, value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise click.BadParameter(f"{value} is not a finite number")
        if upper is not None and value > upper:
            raise click.BadParameter(f"{value:g} is above {upper:g}")
        return value

    return check


def _parse_levels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 0.2,0.4,0.6,0.8") from None
    if not levels or any(not 0.0 < s <= 1.0 for s in levels):
        raise click.BadParameter("each level must be in (0, 1]")
    return levels


def _parse_layers(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not LAYER_PATTERN.match(value):
        raise click.BadParameter("expected all, ref, down, mid, up or last-N")
    return value


SCORE_HELP = ("Score read from the U-Net passes: discffusion (the default, the authors' score: half the attention of "
              "the caption and the empty prompt, plus the error gap), diffusion_itm (DiffusionITM's "
              "empty-prompt-normalised error gap, plain norms), denoise (the same gap on mean squared errors) or "
              "attention (paper Eq. 4 alone).")


def _parse_scores(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    scores = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [s for s in scores if s not in SCORES]
    if not scores or unknown:
        raise click.BadParameter(f"expected a comma-separated subset of {', '.join(SCORES)}")
    return scores


def score_option(many: bool = False) -> Callable:
    """--score: one family (score, search, tune, demo) or, with `many`, a comma list (eval)."""
    if many:
        return click.option("--score", default=",".join(SCORES), show_default=True, callback=_parse_scores,
                            help="Comma-separated scores, all read from one set of U-Net passes. " + SCORE_HELP)
    return click.option("--score", type=click.Choice(SCORES), default=DEFAULT_SCORE, show_default=True,
                        help=SCORE_HELP)


def engine_options(model_default: str | None = DEFAULT_MODEL,
                   batch_help: str = "U-Net items per forward pass; 0 picks one from the memory budget.",
                   many_scores: bool = False, grid_defaults: dict[str, Any] | None = None) -> Callable:
    """Decorate a command with --model --score --steps --levels --seed --layers --lse-lambda --device --batch-size
    --mask-padding --prune.

    `model_default=None` lets a command decide the model itself (search reads the index manifest);
    `batch_help` lets a command that batches something else (tune: triplets) say so in --help;
    `many_scores` makes --score a comma list (eval scores every column from one set of passes);
    `grid_defaults` ({"steps": 5, "levels": "1.0"}) lets the demo default to a grid a CPU runs in minutes.
    """
    grid = {"steps": 10, "levels": ",".join(str(s) for s in DEFAULT_LEVELS), **(grid_defaults or {})}
    model_help = ("Diffusion model, SD 1.x/2.x, SDXL or SD3/SD3.5 in diffusers format: hub id, local directory, or "
                  f"'demo' (default: the model a --deltas file records, else {DEFAULT_MODEL}, SD 2.1-base as "
                  "mirrored by sd2-community)")
    options = [
        click.option("--model", envvar="DISCFF_MODEL", default=model_default, show_default=model_default is not None,
                     help=model_help + " [env DISCFF_MODEL]"),
        score_option(many_scores),
        click.option("--steps", type=click.IntRange(1, 1000), default=grid["steps"], show_default=True,
                     help="DDIM timesteps scored per noise level."),
        click.option("--levels", default=grid["levels"], show_default=True,
                     callback=_parse_levels, help="Relative noise levels of the ensemble."),
        click.option("--seed", type=int, default=0, show_default=True, callback=check_seed,
                     help="Seed of the shared noise."),
        click.option("--layers", default="all", show_default=True, callback=_parse_layers,
                     help="Cross-attention layers of the attention term: all, ref (the authors' last block of down/mid/up), "
                          "down, mid, up or last-N."),
        click.option("--lse-lambda", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                     callback=finite(LSE_LAMBDA_MAX), help="Lambda of the LogSumExp pooling."),
        click.option("--device", default="auto", show_default=True, callback=check_device,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--batch-size", type=click.IntRange(min=0), default=0, show_default=True, help=batch_help),
        click.option("--mask-padding", is_flag=True, default=False,
                     help="Pool only over the prompt's tokens (SOS, words, EOS), not the padding (default: all 77)."),
        click.option("--prune", is_flag=True, default=False,
                     help="Successive halving: drop clear losers after a coarse part of the grid (fewer U-Net passes)."),
    ]

    def decorate(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def fusion_options(f: Callable) -> Callable:
    """--fusion and --fusion-weight: how the final order combines CLIP and the rerank score (fusion.py)."""
    from discff_cli.search.fusion import DEFAULT_FUSION, DEFAULT_WEIGHT, FUSIONS

    f = click.option("--fusion-weight", type=click.FloatRange(0, 1), default=DEFAULT_WEIGHT, show_default=True,
                     help="Weight of the rerank score in the fusion (1 - weight goes to CLIP).")(f)
    return click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True,
                        help="Final order: zsum (z-scored weighted sum of rerank and CLIP scores), rrf "
                             "(reciprocal-rank fusion) or none (the rerank score alone).")(f)


def deltas_option(f: Callable) -> Callable:
    """--deltas FILE: prompt deltas from `discff tune`."""
    return click.option("--deltas", type=click.Path(dir_okay=False), default=None,
                        help="Prompt deltas (.safetensors) made by `discff tune`.")(f)


def json_option(f: Callable) -> Callable:
    """--json: one JSON document on stdout instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


ENGINE_KEYS = ("steps", "levels", "seed", "layers", "lse_lambda", "device", "batch_size", "mask_padding", "prune",
               "score")


def pop_engine_config(kwargs: dict[str, Any]) -> EngineConfig:
    """Remove the engine options from a command's kwargs and return them as an EngineConfig.

    A comma list of scores (eval) configures the engine with its first; the caller reads the rest."""
    values = {key: kwargs.pop(key) for key in ENGINE_KEYS}
    if isinstance(values["score"], tuple):
        values["score"] = values["score"][0]
    return EngineConfig(**values)


def _check_ray(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Without the ray extra, --ray says what to install, before any model loads."""
    if value is None:
        return value
    from discff_cli.errors import DiscffError
    from index.ray_cluster import INSTALL_HINT, ray_available

    if not ray_available():
        raise DiscffError(INSTALL_HINT)
    if not value.strip():
        raise click.BadParameter("give local, auto or a cluster address (ray://host:10001 or host:6379)")
    return value.strip()


def ray_option(what: str, workers: str) -> Callable:
    """--ray [local|auto|ADDRESS], one shape for every command that can run on Ray (index/ray_cluster.py).

    `what` says what runs on Ray, `workers` what --workers then counts."""
    return click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
                        metavar="[local|auto|ADDRESS]", callback=_check_ray,
                        help=f"{what} on Ray: 'local' (the default value) starts Ray on this machine, 'auto' "
                             "joins the cluster in RAY_ADDRESS, or a cluster address; --workers is then the "
                             f"number of {workers} (default: one per GPU, else one per two CPUs). Needs the ray "
                             "extra.")
