"""Which cross-attention layers exist in a U-Net and which ones a `--layers` choice keeps."""

from __future__ import annotations

from typing import Any


def cross_attention_layers(unet: Any) -> list[str]:
    """Names of every attn2 (cross-attention) module, in forward order: down, mid, up."""
    names = [name for name, _ in unet.named_modules() if name.endswith("attn2")]
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda n: (order.get(n.split(".")[0], 3), names.index(n)))


def block_kind(layer_name: str) -> str:
    """'down', 'mid' or 'up' for a layer name such as `up_blocks.1.attentions.0.transformer_blocks.0.attn2`."""
    head = layer_name.split(".")[0]
    return {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}.get(head, "other")


def reference_layers(names: list[str]) -> list[str]:
    """The layers the authors' `ascore` averages: every attention of the *last* cross-attention
    block of down, of mid and of up (eric-ai-lab/Discffusion, unet_2d_condition.py, `forward`:
    ``list(blocks.values())[-1]`` per part, then the last transformer block of each attention)."""
    chosen = []
    for kind in ("down", "mid", "up"):
        layers = [n for n in names if block_kind(n) == kind]
        if layers:
            last_block = max(_block_index(n) for n in layers)
            chosen += [n for n in layers if _block_index(n) == last_block]
    return chosen


def _block_index(layer_name: str) -> int:
    parts = layer_name.split(".")
    return int(parts[1]) if parts[0] in ("down_blocks", "up_blocks") else 0


def select_layers(names: list[str], choice: str) -> list[str]:
    """Apply `--layers all|ref|down|mid|up|last-N` to the ordered layer names."""
    if choice == "all":
        return list(names)
    if choice == "ref":
        return reference_layers(names)
    from discff_cli.errors import DiscffError

    if choice.startswith("last-"):
        count = int(choice.split("-", 1)[1])
        if count > len(names):
            raise DiscffError(f"--layers {choice} asks for {count} cross-attention layers, but this model has "
                              f"{len(names)}; use last-1 to last-{len(names)}, or all.")
        return list(names[-count:])
    chosen = [n for n in names if block_kind(n) == choice]
    if not chosen:
        raise DiscffError(f"--layers {choice}: this model has no cross-attention layers in its '{choice}' blocks.")
    return chosen
