"""clip-retrieval's back-end protocol, so its front end and `ClipClient` work against `discff serve`.

    GET  /indices-list    ["<index name>"]
    POST /knn-service     {"text" | "image" (base64) | "embedding_input", "modality": "image",
                           "num_images", "num_result_ids", "indice_name", "deduplicate", ...}
                          -> [{"id", "similarity", "caption", "url", ...}, ...]
    POST /metadata        {"ids": [...], "indice_name"} -> [{"id", "metadata": {"caption", "url"}}]

As rom1504/clip-retrieval's clip_back.py reads them: `modality` names the index searched ("image":
the image embeddings, the only kind discff has); `num_result_ids` candidates are searched and
`num_images` rows returned; `deduplicate` drops a result whose embedding is near-identical
(cosine > 0.94) to a better one. discff has no safety, violence or aesthetic models and no
multilingual CLIP: `use_safety_model`, `use_violence_detector`, `aesthetic_score`/`aesthetic_weight`
and `use_mclip` are accepted (ClipClient sends them by default) and ignored, and the answer's
`X-Discff-Ignored` header names those that asked for something. A row's `url` is the sample's own
URL when the collection stored one (img2dataset's `url` column), else this server's `/images/ID`.

discff's own addition: `"rerank": N` reranks the top N of a text query with Discffusion, through
the same `Searcher.search` as `/search` and `discff search`; rows then come in the fused order and
carry `rerank_score` and `fused_score` beside `similarity` (the CLIP cosine).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEDUP_COSINE = 0.94   # clip_back.get_non_uniques' threshold
IGNORED = ("use_safety_model", "use_violence_detector", "use_mclip", "aesthetic_score")


class KnnError(Exception):
    """A request the client can fix; answered 400 with the message."""


@dataclass(frozen=True)
class KnnQuery:
    text: str | None
    image: Any            # a decoded PIL image
    embedding: np.ndarray | None
    num_images: int
    num_result_ids: int
    deduplicate: bool
    rerank: int | None
    base_url: str
    ignored: tuple[str, ...]


def index_name(index_dir: str) -> str:
    """The name /indices-list gives the one index this server holds (its folder's name, no leading dot)."""
    return Path(index_dir).resolve().name.lstrip(".") or "discff"


def parse_knn(body: bytes, name: str, settings, dim: int, base_url: str) -> KnnQuery:
    """Validate a /knn-service body into a KnnQuery; KnnError with one sentence."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):
        raise KnnError("The body must be a JSON object, e.g. {\"text\": \"a red cube\", \"modality\": \"image\", "
                       "\"num_images\": 10}.") from None
    if not isinstance(data, dict):
        raise KnnError("The body must be a JSON object, e.g. {\"text\": \"a red cube\", \"num_images\": 10}.")
    indice = data.get("indice_name")
    if indice not in (None, "", name):
        raise KnnError(f"Unknown indice_name {_quoted(indice)}; this server holds '{name}' (GET /indices-list).")
    modality = data.get("modality", "image")
    if modality == "text":
        raise KnnError("modality 'text' searches an index of caption embeddings; this index holds image "
                       "embeddings only: use modality 'image'.")
    if modality != "image":
        raise KnnError(f"modality must be 'image' (search the image embeddings), not {_quoted(modality)}.")
    num_images = _int(data, "num_images", 40, 1, settings.max_top)
    num_result_ids = max(num_images, _int(data, "num_result_ids", num_images, 1, 10 ** 6))
    rerank = _int(data, "rerank", 0, 0, settings.max_rerank) or None
    text, image, embedding = _inputs(data, settings, dim)
    if rerank and text is None:
        raise KnnError("rerank scores images against a caption: it needs a text query, not an image or embedding.")
    for key in ("deduplicate",) + IGNORED[:3]:
        if not isinstance(data.get(key, False), (bool, type(None))):
            raise KnnError(f"{key} must be true or false, not {_quoted(data[key])}.")
    _number(data, "aesthetic_score")
    _number(data, "aesthetic_weight")
    ignored = tuple(k for k in IGNORED if data.get(k) not in (None, False, ""))
    return KnnQuery(text, image, embedding, num_images, min(num_result_ids, max(settings.max_top, num_images)),
                    bool(data.get("deduplicate", False)), rerank, base_url, ignored)


def _inputs(data: dict, settings, dim: int) -> tuple[str | None, bytes | None, np.ndarray | None]:
    given = [k for k in ("text", "image", "image_url", "embedding_input") if data.get(k) not in (None, "")]
    if not given:
        raise KnnError("Give one of text, image (base64 bytes) or embedding_input, e.g. {\"text\": \"a red cube\"}.")
    if len(given) > 1:  # clip-retrieval takes the first; a client sending two is mistaken
        raise KnnError(f"Give one query, not {' and '.join(given)}.")
    key, value = given[0], data[given[0]]
    if key == "image_url":
        raise KnnError("This server does not download images; send the image's bytes base64-encoded as image.")
    if key == "text":
        if not isinstance(value, str) or not value.strip():
            raise KnnError("text must be the words to search for, e.g. \"a red cube\".")
        if len(value) > settings.max_query_chars:
            raise KnnError(f"The text is {len(value)} characters long; the limit is {settings.max_query_chars}.")
        return value, None, None
    if key == "image":
        try:
            raw = base64.b64decode(value, validate=False) if isinstance(value, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if not raw:
            raise KnnError("image must be the bytes of an image, base64-encoded.")
        from index.imageio import ImageDecodeError, decode

        try:  # decoded here, before the request queues for the model: a bad image is the client's to fix
            return None, decode(raw, resize_to=256).image, None
        except ImageDecodeError as exc:
            raise KnnError(f"image cannot be read as an image ({exc}).") from None
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.shape != (dim,) or not np.isfinite(vector).all():
        raise KnnError(f"embedding_input must be a list of {dim} finite numbers (this index's CLIP dimension).")
    return None, None, vector[None, :]


def _int(data: dict, key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise KnnError(f"{key} must be a whole number from {low} to {high}, not {_quoted(value)}.")
    if not low <= int(value) <= high:
        raise KnnError(f"{key} must be from {low} to {high}, not {int(value)}.")
    return int(value)


def _number(data: dict, key: str) -> None:
    value = data.get(key, "")
    if value in ("", None):
        return
    try:
        if isinstance(value, bool):
            raise ValueError
        float(value)
    except (TypeError, ValueError):
        raise KnnError(f"{key} must be a number, not {_quoted(value)}.") from None


def _quoted(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
    return text[:40] + ("…" if len(text) > 40 else "")


def run_knn(searcher, query: KnnQuery) -> list[dict]:
    """The protocol's rows for `query`: text through the one search path (`Searcher.search`), an image
    or an embedding straight through the index's CLIP image tower and FAISS."""
    k = query.num_result_ids if query.deduplicate else query.num_images
    if query.text is not None:
        rows = searcher.search(query.text, k, query.rerank).rows
        found = [(r["id"], r["clip_score"], r) for r in rows]
    else:
        vector = query.embedding if query.embedding is not None else _embed_image(searcher, query.image)
        hits = searcher.index.search_vectors(vector, k)[0]
        found = [(h.row, h.clip_score, {}) for h in hits]
    if query.deduplicate:
        found = _deduplicate(searcher.index, found)
    found = found[:query.num_images]
    stored = searcher.index.sidecars([row for row, _, _ in found])
    out = []
    for row, similarity, extra in found:
        meta = _json(stored.get(row, {}).get("json"))
        item = {"id": row, "similarity": similarity, "caption": stored.get(row, {}).get("caption"),
                "url": meta.get("url") if isinstance(meta.get("url"), str) else f"{query.base_url}images/{row}",
                "path": searcher.index.rel_by_row[row]}
        for key in ("rerank_score", "fused_score", "clip_rank"):
            if extra.get(key) is not None:
                item[key] = extra[key]
        out.append(item)
    return out


def _embed_image(searcher, image) -> np.ndarray:
    """The query image through the index's CLIP image tower (the one that embedded the collection)."""
    searcher.index.check_clip(searcher.clip)
    return searcher.clip.embed_images([image])


def _deduplicate(index, found: list[tuple]) -> list[tuple]:
    """Keep each result unless a better-ranked kept one is near-identical to it (cosine > 0.94)."""
    if len(found) < 2:
        return found
    emb = np.asarray(index.embeddings[np.asarray([row for row, _, _ in found])], np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    kept: list[int] = []
    for i in range(len(found)):
        if not kept or float((emb[kept] @ emb[i]).max()) <= DEDUP_COSINE:
            kept.append(i)
    return [found[i] for i in kept]


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def metadata_rows(searcher, body: bytes, name: str) -> list[dict]:
    """/metadata: {"ids": [...]} -> [{"id", "metadata": {"caption", "url", "path"}}] (clip_back's MetadataService)."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):
        data = None
    ids = data.get("ids") if isinstance(data, dict) else None
    count = len(searcher.index.rel_by_row)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count
                                            for i in ids) or len(ids) > 1000:
        raise KnnError(f"Give ids, a list of at most 1000 index ids from 0 to {count - 1}, as {{\"ids\": [0, 1]}}.")
    if data.get("indice_name") not in (None, "", name):
        raise KnnError(f"Unknown indice_name {_quoted(data.get('indice_name'))}; this server holds '{name}'.")
    stored = searcher.index.sidecars(ids)
    out = []
    for i in ids:
        meta = _json(stored.get(i, {}).get("json"))
        item = {"caption": stored.get(i, {}).get("caption"), "path": searcher.index.rel_by_row[i]}
        if isinstance(meta.get("url"), str):
            item["url"] = meta["url"]
        out.append({"id": i, "metadata": item})
    return out
