"""Reading the user's text inputs (captions, JSONL) with the same one-sentence errors everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from discff_cli.errors import DiscffError


def read_lines(path: str | Path, kind: str) -> list[str]:
    """All lines of a UTF-8 file; `kind` names the file in errors ("Captions file", "Eval file", ...)."""
    file = Path(path)
    if not file.exists():
        raise DiscffError(f"{kind} '{path}' does not exist.")
    if not file.is_file():
        what = "a folder" if file.is_dir() else "not a regular file (a device, FIFO or socket)"
        raise DiscffError(f"{kind} '{path}' is {what}; give a text file.")
    try:
        return file.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM is not part of the first line
    except UnicodeDecodeError:
        raise DiscffError(f"{kind} '{path}' is not UTF-8 text.") from None
    except OSError as exc:
        raise DiscffError(f"{kind} '{path}' cannot be read ({exc.strerror or exc}).") from None


def line_error(path: str | Path, line: int, why: str) -> DiscffError:
    """The one format for a bad line of any input file: `FILE line N: why.`"""
    return DiscffError(f"{path} line {line}: {why.rstrip('.')}.")


def read_jsonl(path: str | Path, kind: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for every non-blank line; invalid JSON names its line."""
    for number, text in enumerate(read_lines(path, kind), start=1):
        if not text.strip():
            continue
        yield number, parse_json_line(text, path, number)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_line(text: str, path: str | Path, number: int) -> Any:
    """json.loads with every failure as `FILE line N: why` -- syntax, NaN/Infinity, nesting too deep
    for the parser (RecursionError), integers too long to convert (ValueError)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise line_error(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise line_error(path, number, "not usable JSON (nested too deeply)") from None
    except ValueError as exc:
        why = "a number too long" if "digits" in str(exc) else str(exc).splitlines()[0][:120]
        raise line_error(path, number, f"not usable JSON ({why})") from None
