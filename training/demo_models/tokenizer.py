"""A Hugging Face CLIPTokenizer directory made from the BPE vocabulary that open_clip ships.

Offline machines cannot download `openai/clip-vit-*` tokenizer files, but open_clip's
package carries the same 49,408-token BPE. Writing it as vocab.json + merges.txt gives the
token ids of the real SD/CLIP tokenizer, so tiny and demo models load through the same
`CLIPTokenizer.from_pretrained` code path as Stable Diffusion.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _open_clip_bpe_path() -> Path:
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


def write_clip_tokenizer(out_dir: str | Path, pad_token: str = "!", max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and the configs of a CLIPTokenizer into `out_dir`.

    `pad_token="!"` matches Stable Diffusion 2.x (SD 1.x pads with <|endoftext|>).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(_open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = list(_bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out
