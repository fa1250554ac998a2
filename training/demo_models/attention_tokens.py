"""Does a word's cross-attention light up on the object the word names? Per token class.

Why: the Discffusion attention term (paper Eq. 4) reads the U-Net's cross-attention logits. On
real Stable Diffusion a colour or noun token's attention concentrates on the pixels of the
object it names; that is the behaviour the score relies on. This script measures it on a
model directory for two-object test scenes of the demo world, where the scene geometry gives
every object's exact mask (world.object_mask).

The maps come from the engine's own path: a Scorer (load_scorer) runs each scene's image
and true caption over the engine's (timestep, level) grid, and the engine's cross-attention
processor hands every attn2 layer's logits A = QKᵀ/√d to its `logit_hook`, which keeps
softmax(A) averaged over heads (the attention each pixel pays each token). No U-Net code is
patched. Per token, the map is averaged over conditions, resized to the latent grid, averaged
over layers and normalised to sum 1 over pixels. Reported per class (sos, colour, shape,
relation, function word, eos, padding):

- mass_own: the share of a colour/shape token's map inside the object it names; lift_own is
  that share over the object's share of the image (1 = no preference for the object);
- hit: the named object's density beats the other object's (chance 0.5), with a 95% CI;
- lift_objects: any token's density on the two objects together over their area;
- share: how much of every pixel's attention goes to that class (all padding tokens summed).

    python -m training.demo_models.attention_tokens --model demo --n 48 --out docs/results/diffusion/attention_tokens
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("sos", "colour", "shape", "relation", "function", "eos", "padding")
RELATION_WORDS = {"left", "right", "above", "below", "over", "under", "beneath", "higher", "lower"}
LATENT_GRID = 16


# ----------------------------------------------------------------------------- tokens and masks


def token_table(words: list[str]) -> list[dict]:
    """Class of every token position of one caption: words are the tokenizer's tokens
    ('<|startoftext|>', 'red</w>', ...), all positions including padding."""
    from training.world import COLOURS, SHAPES

    eos = words.index("<|endoftext|>")
    table = []
    for pos, tok in enumerate(words):
        word = tok.replace("</w>", "")
        if pos == 0:
            cls = "sos"
        elif pos == eos:
            cls = "eos"
        elif pos > eos:
            cls = "padding"
        elif word in COLOURS:
            cls = "colour"
        elif word in SHAPES:
            cls = "shape"
        elif word in RELATION_WORDS:
            cls = "relation"
        else:
            cls = "function"
        table.append({"pos": pos, "word": word if pos < eos else cls, "class": cls})
    return table


def named_object(word: str, scene) -> int | None:
    """Index of the object a colour or shape word names (two-object scenes use distinct colours
    and distinct shapes, so the word alone decides); None for every other word."""
    for i, obj in enumerate(scene.objects):
        if word in (obj.colour, obj.shape):
            return i
    return None


def soft_masks(scene, grid: int = LATENT_GRID) -> np.ndarray:
    """[objects, grid, grid]: each object's pixel coverage box-averaged to the latent grid."""
    from training.world import SIZE, object_mask

    k = SIZE // grid
    return np.stack([object_mask(o).reshape(grid, k, grid, k).mean(axis=(1, 3)) for o in scene.objects])


# ----------------------------------------------------------------------------- recording


class AttentionRecorder:
    """The engine processor's logit_hook: keeps head-averaged softmax(A) of every attn2 layer
    and returns the logits untouched, so the forward pass (and the score) stay the engine's."""

    def __init__(self) -> None:
        self.maps: dict[str, Any] = {}

    def __call__(self, name: str, logits):
        self.maps[name] = logits.detach().float().softmax(dim=-1).mean(dim=1).cpu()  # [items, n, m]
        return logits

    def attach(self, scorer) -> None:
        for proc in scorer.processors.values():
            proc.record = True
            proc.logit_hook = self


def layer_maps(maps: dict[str, Any], grid: int = LATENT_GRID) -> dict[str, np.ndarray]:
    """Per layer: [m, grid, grid] token maps, averaged over the items (conditions) of the pass,
    resized to the latent grid and normalised to sum 1 over pixels per token."""
    import torch.nn.functional as F

    out = {}
    for name, probs in maps.items():
        mean = probs.mean(dim=0)  # [n, m]
        side = int(math.isqrt(mean.shape[0]))
        img = mean.T.reshape(1, -1, side, side)
        img = F.interpolate(img, size=(grid, grid), mode="bilinear", align_corners=False)[0]
        img = img.clamp_min(0)
        out[name] = (img / img.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)).numpy()
        out[name + "#share"] = mean.mean(dim=0).numpy()  # [m]: mean attention each token receives
    return out


def scene_record(scorer, recorder: AttentionRecorder, example) -> dict:
    """One scene through the engine (its grid: config.steps x config.levels): token table,
    per-layer maps and the Discffusion score."""
    latents = scorer.encode_images([example.image])
    states, mask = scorer.encode_texts([example.caption])
    recorder.maps.clear()
    score = float(scorer.score_conditions(latents, states, mask).mean())
    ids = scorer.parts.tokenizer(example.caption, padding="max_length", truncation=True,
                                 max_length=scorer.parts.tokenizer.model_max_length).input_ids
    words = scorer.parts.tokenizer.convert_ids_to_tokens(ids)
    return {"tokens": token_table(words), "maps": layer_maps(recorder.maps), "score": score}


# ----------------------------------------------------------------------------- metrics


def token_metrics(map_: np.ndarray, masks: np.ndarray, own: int | None) -> dict:
    """Mass, lift and hit of one token map [grid, grid] (sums to 1) against the scene's object masks."""
    union = np.clip(masks.sum(axis=0), 0, 1)
    out = {"mass_objects": float((map_ * union).sum()), "area_objects": float(union.mean())}
    out["lift_objects"] = out["mass_objects"] / max(out["area_objects"], 1e-9)
    if own is not None:
        other = 1 - own
        lift = [float((map_ * masks[i]).sum() / max(masks[i].mean(), 1e-9)) for i in range(2)]
        out.update({"mass_own": float((map_ * masks[own]).sum()), "area_own": float(masks[own].mean()),
                    "lift_own": lift[own], "lift_other": lift[other], "hit": lift[own] > lift[other]})
    return out


def scene_token_rows(record: dict, scene, layer_names: list[str]) -> list[dict]:
    """Metrics of every token class of one scene, for all layers together and per block."""
    from discff_cli.engine.layers import block_kind

    masks = soft_masks(scene)
    maps = record["maps"]
    groups = {"all": layer_names}
    for name in layer_names:
        groups.setdefault(block_kind(name), []).append(name)
    tokens = record["tokens"]
    pads = [t["pos"] for t in tokens if t["class"] == "padding"]
    entries = [t for t in tokens if t["class"] != "padding"]
    if pads:
        entries.append({"pos": pads, "word": "padding", "class": "padding"})
    rows = []
    for t in entries:
        own = named_object(t["word"], scene) if t["class"] in ("colour", "shape") else None
        row = {"word": t["word"], "class": t["class"]}
        for group, names in groups.items():
            stack = np.stack([maps[n][t["pos"]] for n in names])  # [layers, (pads,) g, g]
            m = stack.reshape(len(names), -1, LATENT_GRID, LATENT_GRID).mean(axis=(0, 1))
            row[group] = token_metrics(m / m.sum(), masks, own)
        share = np.mean([maps[n + "#share"] for n in layer_names], axis=0)
        row["share"] = float(np.sum(share[t["pos"]]))
        rows.append(row)
    return rows


def summarise(rows: list[dict], groups: list[str]) -> dict:
    """Per token class: means over token instances, hit rates with Wilson 95% intervals."""
    from discff_cli.evaluation.stats import wilson_rounded as wilson

    out = {}
    for cls in CLASSES:
        sel = [r for r in rows if r["class"] == cls]
        if not sel:
            continue
        entry: dict[str, Any] = {"n_tokens": len(sel), "share": round(float(np.mean([r["share"] for r in sel])), 4)}
        for g in groups:
            vals = [r[g] for r in sel if g in r]
            if not vals:
                continue
            e = {k: round(float(np.mean([v[k] for v in vals])), 4) for k in ("mass_objects", "area_objects", "lift_objects")}
            if "hit" in vals[0]:
                hits = sum(v["hit"] for v in vals)
                e.update({k: round(float(np.mean([v[k] for v in vals])), 4)
                          for k in ("mass_own", "area_own", "lift_own", "lift_other")})
                e.update({"hit": round(hits / len(vals), 4), "hit_ci95": wilson(hits, len(vals))})
            entry[g] = e
        out[cls] = entry
    return out


# ----------------------------------------------------------------------------- picture


_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def heat(v: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] uint8 on an inferno-like ramp."""
    x = np.clip(v, 0, 1) * (len(_STOPS) - 1)
    i = np.minimum(x.astype(int), len(_STOPS) - 2)
    f = (x - i)[..., None]
    return (_STOPS[i] * (1 - f) + _STOPS[i + 1] * f).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inside = mask > 0.5
    edge = inside.copy()
    edge[1:-1, 1:-1] = inside[1:-1, 1:-1] & ~(inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
    return edge


LIFT_MAX = 4.0  # picture scale: attention density / uniform density, 0 (black) .. LIFT_MAX (white-yellow)


def save_figure(examples: list, records: list[dict], layer_names: list[str], path: Path, cell: int = 96) -> None:
    """One row per scene: the image, then every token's layer-averaged map over it, on one fixed
    scale (density over the uniform density, so a flat map is dark everywhere, not bright), the
    named object of a colour or shape word outlined in cyan."""
    from PIL import Image, ImageDraw

    from training.world import object_mask

    rows = []
    for ex, rec in zip(examples, records):
        toks = [t for t in rec["tokens"] if t["class"] != "padding"]
        pads = [t["pos"] for t in rec["tokens"] if t["class"] == "padding"]
        cols = [("image", None, None)] + [(t["word"], [t["pos"]], t) for t in toks]
        cols += [("padding", pads, {"class": "padding", "word": "padding"})] if pads else []
        rows.append((ex, rec, cols))
    n_cols = max(len(c) for _, _, c in rows)
    label_h, top = 14, 16
    fig = Image.new("RGB", (n_cols * (cell + 2), top + len(rows) * (cell + label_h + 2) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(fig)
    draw.text((2, 2), f"token attention density / uniform, layer-averaged: black 0, bright {LIFT_MAX:g}+ "
                      "(flat = dark purple); cyan = the object the word names", fill=(0, 0, 0))
    for r, (ex, rec, cols) in enumerate(rows):
        y = top + r * (cell + label_h + 2)
        base = np.asarray(ex.image.convert("L").resize((cell, cell)), dtype=np.float64)[..., None]
        for c, (label, positions, tok) in enumerate(cols):
            x = c * (cell + 2)
            draw.text((x + 2, y), label, fill=(0, 0, 0))
            if positions is None:
                fig.paste(ex.image.resize((cell, cell), Image.Resampling.NEAREST), (x, y + label_h))
                continue
            m = np.mean([rec["maps"][n][positions].mean(axis=0) for n in layer_names], axis=0)
            lift = m / m.mean()
            up = np.asarray(Image.fromarray((np.clip(lift / LIFT_MAX, 0, 1) * 255).astype(np.uint8)).resize(
                (cell, cell), Image.Resampling.BILINEAR), dtype=np.float64) / 255
            px = (0.8 * heat(up) + 0.2 * base).astype(np.uint8)
            own = named_object(tok["word"], ex.scene) if tok["class"] in ("colour", "shape") else None
            if own is not None:
                edge = _outline(np.asarray(Image.fromarray((object_mask(ex.scene.objects[own]) * 255).astype(np.uint8))
                                           .resize((cell, cell), Image.Resampling.NEAREST), dtype=np.float64) / 255)
                px[edge] = (0, 255, 255)
            fig.paste(Image.fromarray(px), (x, y + label_h))
    fig.save(path)


# ----------------------------------------------------------------------------- main


def analyse(model: str, n: int, steps: int, levels: tuple[float, ...], device: str = "auto", seed: int = 0,
            figure_rows: int = 4, out: Path | None = None) -> dict:
    """Run n two-object test scenes through the engine and return the per-class summary (and save it)."""
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import load_scorer
    from training.world import iter_split

    t0 = time.time()
    # score="attention": the cross-attention logits are what this studies, so they must be computed
    scorer = load_scorer(model, EngineConfig(steps=steps, levels=levels, seed=seed, device=device, score="attention"))
    recorder = AttentionRecorder()
    recorder.attach(scorer)
    layer_names = list(scorer.layer_names)
    rows, examples, records = [], [], []
    for _, ex in iter_split("test", n, seed, n_objects=2):
        rec = scene_record(scorer, recorder, ex)
        rows += scene_token_rows(rec, ex.scene, layer_names)
        if len(records) < figure_rows:
            examples.append(ex)
            records.append(rec)
    groups = ["all"] + [g for g in ("down", "mid", "up") if any(g in r for r in rows)]
    result = {
        "model": model, "n_scenes": n, "split": "test", "scenes": "two-object, one random true phrasing each",
        "engine": {"steps": steps, "levels": list(levels), "seed": seed, "timesteps": sorted({c.timestep for c in scorer.conditions})},
        "layers": len(layer_names), "latent_grid": LATENT_GRID,
        "tokenizer_length": int(scorer.parts.tokenizer.model_max_length),
        "chance": {"hit": 0.5, "lift": 1.0},
        "per_class": summarise(rows, groups),
        "time_s": round(time.time() - t0, 1),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "attention_tokens.json").write_text(json.dumps(result, indent=2) + "\n")
        save_figure(examples, records, layer_names, out / "attention_tokens.png")
        (out / "attention_tokens.txt").write_text("\n".join(ex.caption for ex in examples) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="diffusers directory or 'demo'")
    p.add_argument("--n", type=int, default=48, help="two-object test scenes")
    p.add_argument("--steps", type=int, default=10, help="DDIM timesteps of the engine grid")
    p.add_argument("--levels", default="0.2,0.4,0.6,0.8", help="relative noise levels of the engine grid")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=4, help="scenes shown in the picture")
    p.add_argument("--out", type=Path, default=Path("docs/results/diffusion/attention_tokens"))
    args = p.parse_args(argv)
    levels = tuple(float(x) for x in args.levels.split(","))
    result = analyse(args.model, args.n, args.steps, levels, args.device, args.seed, args.rows, args.out)
    print(json.dumps(result["per_class"], indent=2))


if __name__ == "__main__":
    main()
