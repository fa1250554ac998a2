"""Output for people (rich tables on stdout, progress on stderr) and for pipelines (JSON)."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else, so `| jq` always works."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                justify: Sequence[str] | None = None) -> None:
    """A rich table on stdout; numbers are pre-formatted by the caller."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify=(justify[i] if justify else "left"))  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)
