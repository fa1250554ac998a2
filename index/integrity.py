"""Detecting damage to an index generation: what the manifest must hold and what each file must be.

The manifest records each data file's size and BLAKE2b digest (`checks`). Readers compare
sizes on every load (free) and parse each file defensively; `discff index check` and the
builder compare digests too, so a file damaged in place (same size, other bytes) is found
before its embeddings are reused. Every finding is one `Problem`: the file and what is wrong
with it, in words a user can act on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index.errors import IndexDamaged

DATA_KEYS = ("items", "embeddings", "faiss")
REQUIRED = {"format_version": int, "generation": int, "root": str, "clip": dict, "count": int,
            "faiss": dict, "files": dict}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of the index directory."""

    file: str
    what: str

    def sentence(self) -> str:
        return f"{self.file}: {self.what}"


def embedding_keys(files: dict[str, Any]) -> list[str]:
    """Keys of the embedding shards in a manifest's `files`: "embeddings", then "embeddings.1", ...

    An index of up to index.shards.SHARD_ROWS images has only "embeddings" (the single file of
    every earlier index); a larger one names one more key per shard.
    """
    extra = sorted((int(key.split(".", 1)[1]), key) for key in files
                   if key.startswith("embeddings.") and key.split(".", 1)[1].isdigit())
    return ["embeddings"] + [key for _, key in extra]


def data_keys(manifest: dict[str, Any]) -> list[str]:
    """Every data file key of a manifest, in the order checks report them."""
    return ["items", *embedding_keys(manifest["files"]), "faiss"]


def file_digest(path: Path) -> str:
    """BLAKE2b-128 of a file's bytes (streamed: embeddings files can be gigabytes)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_check(path: Path) -> dict[str, Any]:
    """What the manifest records about one data file."""
    return {"size": path.stat().st_size, "blake2b": file_digest(path)}


def manifest_problems(manifest: Any) -> list[str]:
    """Why a parsed manifest cannot be used (empty when it can)."""
    if not isinstance(manifest, dict):
        return [f"holds a JSON {type(manifest).__name__}, not an object"]
    problems = [f"misses '{key}'" for key in REQUIRED if key not in manifest]
    problems += [f"'{key}' is not a {kind.__name__}" for key, kind in REQUIRED.items()
                 if key in manifest and not isinstance(manifest[key], kind)]
    if problems:
        return problems
    files = manifest["files"]
    keys = list(DATA_KEYS) + embedding_keys(files)[1:]
    problems += [f"names no {key} file" for key in keys
                 if not isinstance(files.get(key), str) or "/" in files[key] or files[key] in ("", ".", "..")]
    clip = manifest["clip"]
    problems += [f"misses clip '{key}'" for key in ("spec", "fingerprint", "dim") if key not in clip]
    problems += [f"misses faiss '{key}'" for key in ("type", "params") if key not in manifest["faiss"]]
    return problems


def check_files(index_dir: Path, manifest: dict[str, Any], deep: bool,
                deep_keys: tuple[str, ...] = DATA_KEYS) -> list[Problem]:
    """Compare each data file with what the manifest records: presence, size, and (deep, for `deep_keys`) digest."""
    problems: list[Problem] = []
    checks = manifest.get("checks") if isinstance(manifest.get("checks"), dict) else {}
    for key in data_keys(manifest):
        name = manifest["files"][key]
        path = index_dir / name
        if not path.is_file():
            problems.append(Problem(name, "is missing"))
            continue
        expected = checks.get(key)
        if not isinstance(expected, dict):
            continue  # an index written before checks were recorded: only the parsers can tell
        size = path.stat().st_size
        if size != expected.get("size"):
            problems.append(Problem(name, f"is {size:,} bytes, the manifest recorded {expected.get('size'):,}"
                                    if isinstance(expected.get("size"), int) else f"is {size:,} bytes"))
        elif deep and key.split(".")[0] in deep_keys and file_digest(path) != expected.get("blake2b"):
            problems.append(Problem(name, "has other contents than the manifest recorded (checksum differs)"))
    return problems


def damaged(index_dir: Path, problems: list[Problem], root: str | None = None) -> IndexDamaged:
    """One sentence naming the damage and the repair (the image folder named when the manifest still says it)."""
    listed = "; ".join(p.sentence() for p in problems[:3]) + ("; …" if len(problems) > 3 else "")
    command = f"discff index build '{root}' --index '{index_dir}'" if root else "discff index build DIR"
    return IndexDamaged(
        f"The index at '{index_dir}' is damaged ({listed}); run `{command}` to repair it "
        f"(`discff index check` lists every problem).",
        problems,
    )
