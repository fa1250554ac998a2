"""Reading the user's text inputs (captions, JSONL) with the same one-sentence errors everywhere."""

from __future__ import annotations

from pathlib import Path

from discff_cli.errors import DiscffError


def read_lines(path: str | Path, kind: str) -> list[str]:
    """All lines of a UTF-8 file; `kind` names the file in errors ("Captions file", "Eval file", ...)."""
    file = Path(path)
    if not file.is_file():
        raise DiscffError(f"{kind} '{path}' does not exist.")
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DiscffError(f"{kind} '{path}' is not UTF-8 text.") from None
