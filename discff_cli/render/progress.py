"""Progress on stderr: one bar for every long loop, so every command shows it the same way.

    with progress_bar("scoring", enabled=not as_json, unit="U-Net items") as bar:
        scorer.rank(images, texts, progress=bar.update)     # the engine calls update(done, total)
    with progress_bar("CLIP images", len(images)) as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

A disabled bar (`--json`, or nothing to count) is a no-op with the same methods, so callers never
branch. The bar is transient by default (gone when the loop ends); its task starts when the total is
first known, so a caller can open it before it knows how much there is to do. The engine never
imports this module: it takes `bar.update` as a plain callback.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


class Bar:
    """One task on a rich bar (or nothing, when disabled)."""

    def __init__(self, progress: Any, label: str, total: int | None, completed: int = 0) -> None:
        self._progress, self._label, self._task = progress, label, None
        if progress is not None and total is not None:
            self._task = progress.add_task(label, total=total, completed=completed)

    def advance(self, n: int = 1) -> None:
        """`n` more done."""
        if self._task is not None:
            self._progress.advance(self._task, n)

    __call__ = advance

    def update(self, done: int, total: int) -> None:
        """`done` of `total` done (the engine's callback: it knows the total, the caller does not)."""
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(self._label, total=total, completed=done)
        else:
            self._progress.update(self._task, total=total, completed=done)

    def start(self, total: int) -> None:
        """Show the bar from now on with `total` to do (index build: once the files are counted)."""
        self.update(0, total)

    def describe(self, text: str) -> None:
        """Replace the label (tune: epoch, loss and validation accuracy)."""
        if self._task is not None:
            self._progress.update(self._task, description=text)


@contextmanager
def progress_bar(label: str, total: int | None = None, enabled: bool = True, *, unit: str | None = None,
                 elapsed: bool = False, remaining: bool = True, rate: str | None = None, transient: bool = True,
                 completed: int = 0, console: Any = None, minimum: int = 0) -> Iterator[Bar]:
    """A bar on stderr for the duration of the block: `label`, the bar, done/total, then `unit` (a word
    after the count), `rate` (e.g. "images": a per-second rate), the time elapsed and/or remaining.

    Disabled when `enabled` is false or the total is known and below `minimum` (or zero)."""
    if not enabled or (total is not None and (total == 0 or total < minimum)):
        yield Bar(None, label, None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from discff_cli.render.output import stderr_console

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    if rate:
        columns.append(_rate_column(rate))
    if elapsed:
        columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console or stderr_console(), transient=transient) as progress:
        yield Bar(progress, label, total, completed)


def _rate_column(unit: str) -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):  # noqa: ANN001, ANN201 - rich's signature
            elapsed = task.elapsed or 0.0
            return Text(f"{task.completed / elapsed:,.1f} {unit}/s" if elapsed > 0 else f"- {unit}/s")

    return Rate()
