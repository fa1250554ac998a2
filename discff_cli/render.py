"""Output for people (rich tables on stdout, progress on stderr) and for pipelines (JSON)."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else, so `| jq` always works.

    NaN and infinities are not JSON: they are printed as null, with one warning on stderr.
    """
    replaced = [0]
    clean = _finite(document, replaced)
    sys.stdout.write(json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    if replaced[0]:
        sys.stderr.write(f"warning: {replaced[0]} value(s) were not finite numbers (NaN or infinity) and are "
                         "printed as null\n")


def print_json_line(document: Any) -> None:
    """One JSON document on one line (JSON Lines), flushed, so a consumer can stream many of them."""
    replaced = [0]
    clean = _finite(document, replaced)
    sys.stdout.write(json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()
    if replaced[0]:
        sys.stderr.write(f"warning: {replaced[0]} value(s) were not finite numbers (NaN or infinity) and are "
                         "printed as null\n")


def _finite(value: Any, replaced: list[int]) -> Any:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        replaced[0] += 1
        return None
    if isinstance(value, dict):
        return {k: _finite(v, replaced) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, replaced) for v in value]
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return _finite(value.item(), replaced)
    return value


def format_score(value: float | None, digits: int = 4) -> str:
    """A score with `digits` significant digits, whatever its scale: 4.212, 0.0005412, -1.3e-05.

    Why not a fixed number of decimals: denoise scores are ~1e-4 on the demo model and would print as
    0.0000; attention scores are ~4 and need no more than three decimals."""
    if value is None:
        return ""
    text = f"{value:.{digits}g}"
    return "0" if text in ("-0", "0") else text


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                justify: Sequence[str] | None = None) -> None:
    """A rich table on stdout; numbers are pre-formatted by the caller."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=any(columns))
    for i, column in enumerate(columns):
        # never cut a cell ("…"): fold it; cells such as "0.975 [0.94, 0.99]" are not wrapped at their spaces
        table.add_column(column, justify=(justify[i] if justify else "left"),  # type: ignore[arg-type]
                         overflow="fold", no_wrap=True)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    # Piped or redirected, the table keeps its natural width (rich would assume 80 columns and cut paths).
    Console(width=None if sys.stdout.isatty() else max(80, table_width(columns, rows))).print(table)


def table_width(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Characters a table needs to show every cell whole: widest cell per column, plus borders and padding."""
    widths = [len(str(c)) for c in columns]
    for row in rows:
        widths = [max(w, len(str(cell))) for w, cell in zip(widths, row)]
    return sum(widths) + 3 * len(widths) + 1
