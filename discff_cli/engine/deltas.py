"""Prompt deltas p^k, p^v (paper Eq. 5) and the `.safetensors` file `discff tune` writes.

Each cross-attention layer gets W' = W + p for its key and value projections. The deltas are
nn.Modules attached to the engine's `LSECrossAttnProcessor` (its `delta_k` / `delta_v` slots),
so the frozen diffusers weights are never touched and removing the deltas restores the base
model exactly. The file carries the base model's name and weight fingerprint so that deltas
are never silently applied to a model they were not learned on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from discff_cli.engine import condition_weights
from discff_cli.errors import DiscffError

FORMAT = "discff-deltas/1"
SLOTS = ("delta_k", "delta_v", "delta_q", "delta_o")  # key and value (the paper's), query and output
PAPER_SLOTS = ("delta_k", "delta_v")
DELTAS_ON = {"kv": PAPER_SLOTS, "qkvo": ("delta_q", "delta_k", "delta_v", "delta_o")}  # `tune --deltas-on`


class FullDelta(torch.nn.Module):
    """A full-rank p of W's shape [out, in], zero-initialised: the paper's default."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(out_features, in_features))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        # Master weights stay fp32; cast to the activations' dtype (bf16 on GPU) for the product.
        return F.linear(context, self.weight.to(context.dtype))


class LowRankDelta(torch.nn.Module):
    """p = B·A with rank r: B is zero-initialised, so p starts at exactly zero (as in LoRA)."""

    def __init__(self, out_features: int, in_features: int, rank: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        a = torch.randn(rank, in_features, generator=generator) / in_features ** 0.5
        self.A = torch.nn.Parameter(a)
        self.B = torch.nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(context, self.A.to(context.dtype)), self.B.to(context.dtype))


def make_delta(weight_shape: tuple[int, int], rank: int, generator: torch.Generator | None = None) -> torch.nn.Module:
    out_features, in_features = weight_shape
    if rank and rank < min(out_features, in_features):
        return LowRankDelta(out_features, in_features, rank, generator)
    return FullDelta(out_features, in_features)


def attach_deltas(scorer: Any, rank: int = 0, seed: int = 0,
                  slots: tuple[str, ...] = PAPER_SLOTS) -> list[torch.nn.Parameter]:
    """Give every cross-attention layer zero-valued deltas in `slots` (the paper's p^k, p^v by default);
    returns the new (trainable) parameters."""
    generator = torch.Generator().manual_seed(seed)
    detach_deltas(scorer, keep_weights=True)
    params: list[torch.nn.Parameter] = []
    for name, proc in scorer.processors.items():
        attn = scorer.parts.unet.get_submodule(name)
        for slot in slots:
            if slot not in proc.delta_slots:
                raise DiscffError(f"'{scorer.parts.name}' takes prompt deltas on its key and value projections only "
                                  f"(its joint attention has no separate {slot[-1]} projection to tune); use "
                                  "--deltas-on kv.")
            linear = proc.projection(attn, slot)
            delta = make_delta(tuple(linear.weight.shape), rank, generator).to(scorer.device)
            setattr(proc, slot, delta)
            params.extend(delta.parameters())
    return params


def detach_deltas(scorer: Any, keep_weights: bool = False) -> None:
    """Back to the base model: no deltas and (unless `keep_weights`) uniform head and condition weights."""
    for proc in scorer.processors.values():
        for slot in SLOTS:
            setattr(proc, slot, None)
    if not keep_weights:
        scorer.head_weights.clear()
        scorer.condition_weights = {}
    scorer.invalidate()


def delta_tensors(scorer: Any) -> dict[str, torch.Tensor]:
    """Flat name -> tensor map: `delta_k.<layer>.weight` (or `.A`/`.B`), `head_weights.<layer>` and
    `condition_weights` (engine/condition_weights.py) when the scorer has them."""
    tensors: dict[str, torch.Tensor] = {}
    for name, proc in scorer.processors.items():
        for slot in SLOTS:
            delta = getattr(proc, slot)
            if delta is None:
                continue
            for pname, value in delta.named_parameters():
                tensors[f"{slot}.{name}.{pname}"] = value.detach().float().cpu().clone()
    for name, weights in scorer.head_weights.items():
        tensors[f"head_weights.{name}"] = weights.detach().float().cpu().clone()
    return {**tensors, **condition_weights.tensors_and_meta(scorer)[0]}


def has_prompt_deltas(tensors: dict[str, torch.Tensor]) -> bool:
    """False for a file of timestep weights alone (`discff tune --no-prompt-deltas`)."""
    return any(key.startswith(tuple(f"{slot}." for slot in SLOTS)) for key in tensors)


def slots_of(tensors: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The delta slots a file holds, in SLOTS order."""
    return tuple(slot for slot in SLOTS if any(key.startswith(f"{slot}.") for key in tensors))


def load_delta_tensors(scorer: Any, tensors: dict[str, torch.Tensor], rank: int,
                       grid: list | None = None) -> None:
    """Attach deltas of `rank` and copy `tensors` (as made by `delta_tensors`) into them.

    A file without prompt deltas leaves the base weights as they are; condition weights are set
    when `tensors` has them (`grid` is the grid they were learned on, default the scorer's own).
    """
    if not has_prompt_deltas(tensors):
        detach_deltas(scorer)
        _load_condition_weights(scorer, tensors, grid)
        return
    slots = slots_of(tensors)
    attach_deltas(scorer, rank, slots=slots)
    with torch.no_grad():
        for name, proc in scorer.processors.items():
            for slot in slots:
                for pname, param in getattr(proc, slot).named_parameters():
                    key = f"{slot}.{name}.{pname}"
                    if key not in tensors or tuple(tensors[key].shape) != tuple(param.shape):
                        raise DiscffError(f"The deltas do not fit this model: '{key}' is missing or has another shape.")
                    param.copy_(tensors[key].to(param.device, param.dtype))
    scorer.invalidate()
    scorer.head_weights.clear()
    for key, value in tensors.items():
        if key.startswith("head_weights."):
            scorer.head_weights[key[len("head_weights."):]] = value.clone()
    _load_condition_weights(scorer, tensors, grid)


def _load_condition_weights(scorer: Any, tensors: dict[str, torch.Tensor], grid: list | None) -> None:
    scorer.condition_weights = {}
    if condition_weights.TENSOR in tensors:
        grid = grid if grid is not None else condition_weights.grid_of(scorer)
        condition_weights.install(scorer, tensors[condition_weights.TENSOR], grid)


def save_deltas_file(path: str | Path, scorer: Any, rank: int, extra: dict[str, Any] | None = None) -> Path:
    """Write deltas + head weights with metadata naming the base model, its fingerprint and the layers."""
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT,
        "base_model": scorer.parts.name,
        "fingerprint": scorer.parts.fingerprint,
        "layers": list(scorer.layer_names),
        "rank": int(rank),
        "score": scorer.config.score,  # the family the deltas were tuned for (engine/scores.py)
        "engine_config": scorer.config.to_dict(),
        "model_family": scorer.family.name,
        "prompt_deltas": any(proc.delta_k is not None for proc in scorer.processors.values()),
        **condition_weights.tensors_and_meta(scorer)[1],
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(delta_tensors(scorer), str(tmp), metadata={"discff": json.dumps(meta)})
        tmp.replace(path)  # a crash while writing never leaves a half file under the final name
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temp file behind
        raise
    return path


def read_deltas_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a deltas file; anything unreadable is one clear error."""
    from safetensors import safe_open

    file = Path(path)
    if not file.is_file():
        raise DiscffError(f"Deltas file '{path}' does not exist.")
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("discff", "null"))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception:  # safetensors raises several types for a non-safetensors file
        raise DiscffError(f"'{path}' is not a deltas file made by `discff tune` (not readable as safetensors).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DiscffError(f"'{path}' is not a deltas file made by `discff tune` (no discff metadata).")
    return tensors, meta


def deltas_base_model(path: str | Path) -> str | None:
    """The base model a deltas file records (its header only), or None when it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("discff", "null"))
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_deltas_file later
        return None
    base = meta.get("base_model") if isinstance(meta, dict) else None
    return base if isinstance(base, str) and base else None


def model_for_deltas(model: str | None, deltas: str | Path | None, default: str | None = None) -> str | None:
    """Which diffusion model a command loads: the one rule, for score, search, eval, explain, serve and the API.

    `model` is --model (or DISCFF_MODEL) when the user gave one, else None. Given, it is loaded, and
    deltas tuned on another model are then refused in one sentence as they load (`check_compatible`
    compares weight fingerprints, so a hub id and a local copy of the same weights agree). Without
    it, --deltas means the base model the deltas file records (not a default they would not fit);
    without either, `default` (the command's default model, or for search and serve the index's)."""
    if model:
        return model
    if deltas:
        return deltas_base_model(deltas) or default
    return default


def check_compatible(meta: dict[str, Any], scorer: Any, path: str | Path) -> None:
    """Deltas learned on another base model would silently score nonsense: refuse them."""
    if meta.get("fingerprint") != scorer.parts.fingerprint or meta.get("layers") != list(scorer.layer_names):
        raise DiscffError(
            f"Deltas '{path}' were made for base model '{meta.get('base_model')}' (fingerprint "
            f"{meta.get('fingerprint')}), not for '{scorer.parts.name}' (fingerprint {scorer.parts.fingerprint}); "
            "pass the --model they were tuned on or re-run `discff tune` for this model.")


def read_compatible_deltas(scorer: Any, path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read `path` and refuse it unless it was made for `scorer`'s model, before any scoring is spent."""
    tensors, meta = read_deltas_file(path)
    check_compatible(meta, scorer, path)
    return tensors, meta


def apply_deltas(scorer: Any, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Put deltas read by `read_compatible_deltas` onto `scorer`'s cross-attention layers."""
    load_delta_tensors(scorer, tensors, int(meta.get("rank", 0)), meta.get("condition_grid"))


def apply_deltas_file(scorer: Any, path: str | Path) -> dict[str, Any]:
    """Load `path` onto `scorer` (called by `load_scorer` for --deltas); returns the file's metadata."""
    tensors, meta = read_compatible_deltas(scorer, path)
    apply_deltas(scorer, tensors, meta)
    return meta
