"""Published compositionality benchmarks read in their own layouts, as `discff eval` items.

`load_benchmark(name, path)` gives the same `Item`s `evaluation.items.load_items` gives for an eval
JSONL, so the per-tag table, `--max-per-tag` and every metric work unchanged; `write_jsonl`
keeps them as an eval JSONL that `discff eval OUT` reads back. One module per benchmark, each
citing the layout it reads: winoground.py, aro.py, sugarcrepe.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

from discff_cli.evaluation.datasets import aro, sugarcrepe, winoground
from discff_cli.evaluation.datasets.build import build_items, write_eval_jsonl
from discff_cli.evaluation.datasets.common import cache_for
from discff_cli.evaluation.items import first_per_tag
from discff_cli.errors import DiscffError
from discff_cli.evaluation.items import Item


@dataclass(frozen=True)
class Benchmark:
    read: Callable  # (path, images, cache) -> (drafts, image folder named in reports)
    about: str
    kwargs: dict = field(default_factory=dict)


BENCHMARKS: dict[str, Benchmark] = {
    "winoground": Benchmark(winoground.read, "Winoground, tagged Object/Relation/Both (collapsed_tag)",
                            {"tag_field": "collapsed_tag"}),
    "winoground-tag": Benchmark(winoground.read, "Winoground, tagged by its fine-grained tag", {"tag_field": "tag"}),
    "winoground-secondary": Benchmark(winoground.read, "Winoground, tagged by secondary_tag",
                                      {"tag_field": "secondary_tag"}),
    "aro-relation": Benchmark(aro.read_relation, "ARO VG-Relation (crops), tagged by relation"),
    "aro-attribution": Benchmark(aro.read_attribution, "ARO VG-Attribution (crops), tagged by attribute pair"),
    "sugarcrepe": Benchmark(sugarcrepe.read, "SugarCrepe over COCO val2017, tagged by category"),
}


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def load_benchmark(name: str, path: str | Path, images: str | Path | None = None, max_per_tag: int | None = None,
                   write_jsonl: str | Path | None = None, progress: bool = False,
                   warn: Callable[[str], None] = _warn) -> list[Item]:
    """Every usable item of benchmark NAME at PATH (the first `max_per_tag` of each tag when given).

    Images the benchmark does not have as plain files (ARO crops, Winoground's parquet bytes) are
    made once, next to `write_jsonl` when given, else in the user cache; items whose images are
    missing or undecodable are skipped with one warning line (an error when none are left).
    """
    if name not in BENCHMARKS:
        raise DiscffError(f"Unknown benchmark '{name}'; choose one of {', '.join(BENCHMARKS)}.")
    path = Path(path).expanduser()
    if not path.exists():
        raise DiscffError(f"Benchmark path '{path}' does not exist.")
    if images is not None and not Path(images).is_dir():
        raise DiscffError(f"Image folder '{images}' does not exist.")
    spec = BENCHMARKS[name]
    cache = cache_for(write_jsonl)
    drafts, where = spec.read(path, Path(images).expanduser() if images else None, cache, **spec.kwargs)
    if not drafts:
        raise DiscffError(f"Benchmark '{name}' at '{path}' has no items.")
    items, kept = build_items(first_per_tag(drafts, max_per_tag), cache, where, progress, warn)
    if write_jsonl:
        write_eval_jsonl(items, kept, write_jsonl)
    return items


def benchmark_options(f: Callable) -> Callable:
    """--benchmark NAME, --images DIR and --write-jsonl OUT, for `discff eval`."""
    options = [
        click.option("--benchmark", type=click.Choice(list(BENCHMARKS)), default=None, metavar="NAME",
                     help="Read FILE as this benchmark's published folder instead of an eval JSONL: "
                          f"{', '.join(BENCHMARKS)}."),
        click.option("--images", "benchmark_images", type=click.Path(file_okay=False), default=None,
                     help="With --benchmark: the image folder, when not where the benchmark puts it "
                          "(SugarCrepe: COCO val2017)."),
        click.option("--write-jsonl", type=click.Path(dir_okay=False), default=None,
                     help="With --benchmark: keep the converted items as an eval JSONL (made images beside it)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_benchmark_options(file: str, benchmark: str | None, images: str | None, write_jsonl: str | None) -> None:
    """The benchmark options only make sense together; a folder without --benchmark is a likely slip."""
    if benchmark:
        return
    if images or write_jsonl:
        raise DiscffError("--images and --write-jsonl go with --benchmark NAME.")
    if Path(file).is_dir():
        raise DiscffError(f"'{file}' is a folder: give an eval JSONL file, or --benchmark NAME to read a benchmark's "
                          "folder.")
