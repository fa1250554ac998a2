"""The demo OpenCLIP text tower as a transformers CLIPTextModel: a frozen, pretrained text encoder.

Why: Stable Diffusion 2.x does not train its text encoder; it conditions on the frozen OpenCLIP
ViT-H/14 text tower's *penultimate* layer (final LayerNorm applied), stored in diffusers
pipelines as a CLIPTextModel with one layer fewer. The demo analogue is the bundled demo CLIP's
text tower. Exported the same way, a demo diffusion model trained on it is still a plain
StableDiffusionPipeline directory, loaded by `discff_cli.engine.models.load_sd` unchanged.

The mapping is exact, not approximate: open_clip's text transformer is a pre-LN, causal-mask
transformer with fused QKV, GELU MLP and a final LayerNorm, which is CLIPTextModel's layout.
`export_clip_text_encoder` checks the result against open_clip's own forward and refuses a
tower it cannot represent (a Hugging Face text tower, no causal mask, layer scale, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LAYERS = ("penultimate", "last")
# open_clip text_cfg keys whose non-default values CLIPTextModel cannot express.
_UNSUPPORTED = {"hf_model_name": None, "ls_init_value": None, "no_causal_mask": False, "embed_cls": False,
                "attentional_pool": False, "norm_kwargs": None, "act_kwargs": None, "mlp_ratio": 4.0}


def read_text_cfg(clip_dir: str | Path) -> dict:
    """The `text_cfg` of a local open_clip directory (open_clip_config.json)."""
    path = Path(clip_dir) / "open_clip_config.json"
    if not path.is_file():
        raise ValueError(f"{clip_dir} is not a local open_clip directory (no open_clip_config.json)")
    return json.loads(path.read_text())["model_cfg"]["text_cfg"]


def clip_text_config(text_cfg: dict, layer: str = "penultimate") -> dict:
    """CLIPTextConfig kwargs equivalent to an open_clip text tower read at `layer`."""
    for key, default in _UNSUPPORTED.items():
        if text_cfg.get(key, default) != default:
            raise ValueError(f"open_clip text tower with {key}={text_cfg[key]!r} has no CLIPTextModel equivalent")
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}")
    n_layers = int(text_cfg.get("layers", 12)) - (1 if layer == "penultimate" else 0)
    if n_layers < 1:
        raise ValueError("a one-layer text tower has no penultimate layer; use layer='last'")
    width = int(text_cfg.get("width", 512))
    return {
        "vocab_size": int(text_cfg.get("vocab_size", 49408)),
        "hidden_size": width,
        "intermediate_size": int(width * float(text_cfg.get("mlp_ratio", 4.0))),
        "projection_dim": width,
        "num_hidden_layers": n_layers,
        "num_attention_heads": int(text_cfg.get("heads", 8)),
        "max_position_embeddings": int(text_cfg.get("context_length", 77)),
        "hidden_act": "quick_gelu" if text_cfg.get("quick_gelu") else "gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,  # open_clip pads with id 0 ("!"), as SD 2.x's tokenizer does
    }


def convert_state_dict(sd: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """open_clip text-tower keys -> CLIPTextModel keys (`text_model.` prefix), first n_layers blocks."""
    out = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
    }
    for i in range(n_layers):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        q, k, v = sd[src + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3, dim=0)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[dst + f"self_attn.{name}.weight"] = w
            out[dst + f"self_attn.{name}.bias"] = b
        pairs = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                 "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
        for d, s in pairs.items():
            out[dst + d + ".weight"] = sd[src + s + ".weight"]
            out[dst + d + ".bias"] = sd[src + s + ".bias"]
    return {k: v.float().contiguous() for k, v in out.items()}


def export_clip_text_encoder(clip_dir: str | Path, layer: str = "penultimate", check: bool = True):
    """A frozen fp32 CLIPTextModel whose last_hidden_state is the demo CLIP's `layer` (LN applied).

    With check=True the output is compared with open_clip's own blocks on world captions; a
    difference above 1e-4 raises, so a silently wrong conversion cannot be trained on.
    """
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    config = clip_text_config(read_text_cfg(clip_dir), layer)
    model = CLIPTextModel(CLIPTextConfig(**config))
    weights = load_file(str(Path(clip_dir) / "open_clip_model.safetensors"))
    converted = convert_state_dict(weights, config["num_hidden_layers"])
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # transformers >= 5 drops the prefix
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"text tower conversion left keys unmatched: missing {missing}, unexpected {unexpected}")
    model.requires_grad_(False).eval()
    if check:
        diff = max_abs_difference(model, clip_dir, config["num_hidden_layers"])
        if diff > 1e-4:
            raise ValueError(f"exported text encoder differs from open_clip by {diff:.2e}")
    return model


def open_clip_hidden(clip_dir: str | Path, ids, n_layers: int):
    """open_clip's own token states after n_layers blocks and ln_final (SD 2.x's 'penultimate' recipe)."""
    import open_clip
    import torch

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{Path(clip_dir)}", device="cpu")
    model = model.float().eval()
    with torch.no_grad():
        x = model.token_embedding(ids) + model.positional_embedding
        for block in model.transformer.resblocks[:n_layers]:
            x = block(x, attn_mask=model.attn_mask)
        return model.ln_final(x)


def max_abs_difference(model, clip_dir: str | Path, n_layers: int) -> float:
    """Largest |CLIPTextModel - open_clip| over the token states of a few world captions."""
    import torch
    from open_clip import get_tokenizer

    texts = ["a red circle to the left of a blue square", "a green triangle", "", "a yellow square under a red circle"]
    tok = get_tokenizer(f"local-dir:{Path(clip_dir)}")
    ids = tok(texts)
    with torch.no_grad():
        ours = model(ids).last_hidden_state
    return float((ours - open_clip_hidden(clip_dir, ids, n_layers)).abs().max())
