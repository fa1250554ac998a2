"""Output for people (rich tables on stdout, progress on stderr) and for pipelines (JSON)."""

from __future__ import annotations

import io
import json
import sys
from typing import Any, Sequence


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def to_json(document: Any, indent: int | None = None) -> tuple[str, int]:
    """`document` as JSON text, and how many of its values were not finite numbers (NaN and infinities
    are not JSON: they become null). The one serialisation of every document discff prints or serves
    (`--json`, `--queries --json`, the service's answers, the Python API's `to_json`)."""
    replaced = [0]
    clean = _finite(document, replaced)
    return json.dumps(clean, indent=indent, ensure_ascii=False, allow_nan=False), replaced[0]


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else, so `| jq` always works (non-finite numbers: null, and
    one warning on stderr)."""
    text, replaced = to_json(document, indent=2)
    sys.stdout.write(text + "\n")
    _warn_replaced(replaced)


def print_json_line(document: Any) -> None:
    """One JSON document on one line (JSON Lines), flushed, so a consumer can stream many of them."""
    text, replaced = to_json(document)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    _warn_replaced(replaced)


def _warn_replaced(replaced: int) -> None:
    if replaced:
        sys.stderr.write(f"warning: {replaced} value(s) were not finite numbers (NaN or infinity) and are "
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


PATH_ROOM = 30   # what a shortened path keeps when a caption wraps beside it: the file name and a folder or two


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                justify: Sequence[str] | None = None, shrink: int | None = None, wrap: int | None = None) -> None:
    """A rich table on stdout; numbers are pre-formatted by the caller.

    No cell and no header is ever cut, and no word. In a terminal narrower than the table, the
    column `wrap` (free text, a caption) gives way first: its cells wrap between words, or the
    column is left out when not even its longest word fits. Then the column `shrink` (a path)
    gives way: its cells lose their start to a leading "…" (the file name stays). A line under the
    table says what gave way. Piped or redirected, the table keeps its natural width."""
    import shutil

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    notes: list[str] = []
    lines, shortened = table_lines(title, columns, rows, justify, width, shrink, wrap, notes)
    sys.stdout.write(lines)
    if shortened:
        notes.append("paths shortened with … to fit the terminal")
    if notes:
        sys.stdout.write(f"({'; '.join(notes)}; --json prints them whole)\n")


def table_lines(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                justify: Sequence[str] | None = None, width: int | None = None,
                shrink: int | None = None, wrap: int | None = None,
                notes: list[str] | None = None) -> tuple[str, bool]:
    """The table as text for a terminal `width` columns wide (None: its natural width), and whether
    column `shrink` had to be shortened to fit (what happened to column `wrap` goes into `notes`)."""
    from rich.console import Console
    from rich.table import Table

    cells = [[str(cell) for cell in row] for row in rows]
    columns, justify = list(columns), list(justify) if justify else None
    if width and wrap is not None and table_width(columns, cells) > width:
        cells, kept = _wrap_column(columns, cells, wrap, width, shrink)
        if not kept:
            name = columns.pop(wrap)
            justify = justify[:wrap] + justify[wrap + 1:] if justify else None
            shrink = shrink - 1 if shrink is not None and shrink > wrap else shrink
            (notes if notes is not None else []).append(f"the {name} column left out to fit the terminal")
    shortened = False
    if width and shrink is not None and table_width(columns, cells) > width:
        room = max(len(columns[shrink]), 12, width - (table_width(columns, cells) - _column_width(columns, cells, shrink)))
        shortened = any(len(row[shrink]) > room for row in cells)
        cells = [row[:shrink] + [ellipsize_start(row[shrink], room)] + row[shrink + 1:] for row in cells]
    table = Table(title=title, show_header=any(columns))
    for i, column in enumerate(columns):
        table.add_column(column, justify=(justify[i] if justify else "left"),  # type: ignore[arg-type]
                         overflow="fold", no_wrap=True, min_width=_column_width(columns, cells, i))
    for row in cells:
        table.add_row(*row)
    console = Console(width=max(width or 0, table_width(columns, cells)), file=io.StringIO(), color_system=None,
                      force_terminal=False)
    with console.capture() as captured:
        console.print(table)
    return captured.get(), shortened


def _wrap_column(columns: list[str], cells: list[list[str]], i: int, width: int,
                 shrink: int | None = None) -> tuple[list[list[str]], bool]:
    """Cells with column `i` wrapped between words into the room the other columns leave (at least 12
    characters and its longest word); (cells without the column, False) when that room is not there.
    A column that may shrink (a path) is counted at PATH_ROOM characters at most: it gives way next."""
    import textwrap

    counted = [row[:] for row in cells]
    if shrink is not None:
        for row in counted:
            row[shrink] = row[shrink][-PATH_ROOM:]
    others = table_width(columns[:i] + columns[i + 1:], [row[:i] + row[i + 1:] for row in counted])
    room = width - others - 3
    longest = max([len(w) for row in cells for w in row[i].split()] + [len(columns[i])])
    if room < max(12, longest):
        return [row[:i] + row[i + 1:] for row in cells], False
    wrapped = ["\n".join(textwrap.wrap(row[i], room, break_long_words=False, break_on_hyphens=False)) for row in cells]
    return [row[:i] + [text] + row[i + 1:] for row, text in zip(cells, wrapped)], True


def ellipsize_start(text: str, room: int) -> str:
    """`text` in at most `room` characters, its start replaced by "…" when it is longer."""
    return text if len(text) <= room else "…" + text[len(text) - room + 1:]


def _column_width(columns: Sequence[str], cells: Sequence[Sequence[str]], i: int) -> int:
    return max([len(str(columns[i]))] + [_cell_width(row[i]) for row in cells])


def _cell_width(cell: Any) -> int:
    """The width of a cell: its longest line (a wrapped caption has several)."""
    return max((len(line) for line in str(cell).split("\n")), default=0)


def table_width(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Characters a table needs to show every cell whole: widest cell per column, plus borders and padding."""
    widths = [len(str(c)) for c in columns]
    for row in rows:
        widths = [max(w, _cell_width(cell)) for w, cell in zip(widths, row)]
    return sum(widths) + 3 * len(widths) + 1
