"""Build and save OpenCLIP models in open_clip's `local-dir:` format.

Used by the tests (a tiny random-weight CLIP, loaded back through `load_clip` exactly like real
weights) and by anything that trains its own CLIP (the demo world) to ship it in the same format:
a directory with `open_clip_config.json` ({"model_cfg": ..., "preprocess_cfg": ...}) and
`open_clip_model.safetensors`.
"""

from __future__ import annotations

import json
from pathlib import Path

from index.clip_model import CONFIG_FILE, WEIGHTS_FILE


def tiny_clip_config(embed_dim: int = 32, image_size: int = 32, width: int = 64, layers: int = 2,
                     context_length: int = 77) -> dict:
    """A small ViT CLIP config (vocab 49408 so open_clip's default tokenizer applies)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": width, "heads": 2,
                     "layers": layers},
    }


DEFAULT_PREPROCESS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def save_clip(model, model_cfg: dict, out_dir: str | Path, preprocess_cfg: dict | None = None) -> Path:
    """Save an open_clip model to `out_dir` in the `local-dir:` format that `load_clip` reads."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pp = dict(DEFAULT_PREPROCESS if preprocess_cfg is None else preprocess_cfg)
    pp.setdefault("size", model_cfg["vision_cfg"]["image_size"])
    (out / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    return out


def build_tiny_clip(out_dir: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Create a random-weight tiny CLIP (deterministic for a seed) and save it; returns the directory."""
    import open_clip
    import torch

    cfg = tiny_clip_config(**config_kwargs)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    return save_clip(model, cfg, out_dir)
