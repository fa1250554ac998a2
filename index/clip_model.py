"""OpenCLIP loading and embedding behind one small API (docs/clip_api.md).

Every CLIP that discff uses -- hub weights, the bundled demo model, the tiny random models of
the tests -- is loaded through `load_clip`, so tests exercise the same path as real weights.
The fingerprint is computed from the loaded tensors (not the file bytes) so the same weights
saved as .safetensors or .pt fingerprint alike, and it costs milliseconds even for ViT-H-14.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from index.errors import ModelBroken, ModelUnavailable
from index.hub import hub_reachable

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
DEFAULT_CLIP = "ViT-H-14/laion2b_s32b_b79k"


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; anything else is passed through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"Device '{device}' was requested but no CUDA GPU is available; use --device cpu.")
    return device


def weights_fingerprint(state_dict: dict) -> str:
    """A stable hex digest of a state dict: names, shapes and an evenly spaced sample of every tensor."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        flat = tensor.detach().reshape(-1).float().cpu()
        step = max(1, flat.numel() // 4096)
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(flat[::step].numpy().astype("<f4").tobytes())
    return digest.hexdigest()[:32]


class ClipModel:
    """A loaded OpenCLIP model with L2-normalised float32 embeddings for images and texts."""

    def __init__(self, model, preprocess: Callable, tokenizer: Callable, name: str, fingerprint: str,
                 dim: int, device: str) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.fingerprint = fingerprint
        self.dim = dim
        self.device = device

    def _autocast(self):
        import contextlib

        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def embed_pixels(self, pixels) -> np.ndarray:
        """Embed a batch tensor already produced by `preprocess` (what DataLoader workers yield)."""
        import torch

        with torch.inference_mode(), self._autocast():
            feats = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return _normalise(feats.float().cpu().numpy())

    def embed_images(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        """PIL images -> float32 [N, D], L2-normalised."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(img) for img in images[start:start + batch_size]])
            chunks.append(self.embed_pixels(batch))
        return np.concatenate(chunks)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> float32 [N, D], L2-normalised."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
            with torch.inference_mode(), self._autocast():
                feats = self.model.encode_text(tokens)
            chunks.append(_normalise(feats.float().cpu().numpy()))
        return np.concatenate(chunks)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _missing(spec: str, why: str, repo: str | None = None) -> ModelUnavailable:
    if repo:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
        fetch = (f"on a machine with network run `hf download {repo}` (huggingface_hub's CLI) and copy '{cache}' "
                 f"to the same path here")
    else:
        fetch = "download them once with network access"
    return ModelUnavailable(
        f"OpenCLIP weights '{spec}' are not available ({why}); {fetch}, or pass --clip with a local directory "
        f"holding {CONFIG_FILE} and {WEIGHTS_FILE} (or --clip demo, the bundled model, for a first try)."
    )


def _broken(path: Path, why: str) -> ModelBroken:
    return ModelBroken(f"The CLIP model file '{path}' {why}; restore it or pass another --clip.")


def _check_local_files(folder: Path, checkpoint: Path | None = None) -> None:
    """The config parses and the weights file is whole, before open_clip reads them."""
    from index.model_files import json_problem, safetensors_problem, weights_problem

    why = json_problem(folder / CONFIG_FILE)
    if why:
        raise _broken(folder / CONFIG_FILE, why)
    if checkpoint is not None:
        why = safetensors_problem(checkpoint) if checkpoint.suffix == ".safetensors" else \
            (None if checkpoint.stat().st_size else "is empty")
        if why:
            raise _broken(checkpoint, why)
        return
    problem = weights_problem(folder, (WEIGHTS_FILE, "open_clip_pytorch_model.bin"))
    if problem:
        raise _broken(*problem)


def _open_clip_args(spec: str) -> tuple[str, str | None]:
    """Map a discff CLIP spec to open_clip's (model_name, pretrained)."""
    import open_clip

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ModelUnavailable(f"'{spec}' is a directory but has no {CONFIG_FILE}, so it is not an OpenCLIP model.")
        _check_local_files(path)
        return "local-dir:" + str(path.resolve()), None
    if path.is_file() and path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        config = path.parent / CONFIG_FILE
        if not config.is_file():
            raise ModelUnavailable(
                f"Checkpoint '{spec}' needs an {CONFIG_FILE} beside it, or use NAME/{spec} with an open_clip model name."
            )
        _check_local_files(path.parent, path)
        return "local-dir-file:" + str(path.resolve()), None
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    if spec.startswith(("/", ".", "~")) or path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise ModelUnavailable(f"CLIP model '{spec}' was not found: no such file or directory.")
    name, _, pretrained = spec.partition("/")
    if name not in open_clip.list_models():
        raise ModelUnavailable(
            f"Unknown CLIP model '{spec}': use NAME/PRETRAINED (e.g. {DEFAULT_CLIP}), a local directory, or 'demo'."
        )
    if not pretrained:
        raise ModelUnavailable(f"CLIP spec '{spec}' names an architecture but no weights: use NAME/PRETRAINED.")
    return name, _cached_or_reachable(spec, name, pretrained)


def _cached_or_reachable(spec: str, name: str, tag: str) -> str:
    """Return the cached weights file of a hub tag, or the tag itself when the hub can be reached.

    Without this, an offline machine spends about a minute in huggingface_hub's retries before
    failing; here it fails at once with a message that says what to download.
    """
    import open_clip

    if Path(tag).expanduser().is_file():
        return str(Path(tag).expanduser())
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelUnavailable(f"Unknown pretrained tag '{tag}' for {name} (known: {tags}).")
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                return tag  # open_clip finds it in the cache without network
    if not hub_reachable():
        raise _missing(spec, "not in the local cache and huggingface.co cannot be reached", repo or None)
    return tag


def load_clip(spec: str | Path, device: str = "auto") -> ClipModel:
    """Load an OpenCLIP model from NAME/PRETRAINED, a local-dir, or a checkpoint file next to its config."""
    import open_clip

    spec = str(spec)
    device = resolve_device(device)
    name, pretrained = _open_clip_args(spec)
    try:
        if name.startswith("local-dir-file:"):
            ckpt = Path(name[len("local-dir-file:"):])
            model, preprocess, tokenizer = _load_file_checkpoint(ckpt)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu")
            if name.startswith("local-dir:") and open_clip.factory._find_checkpoint_in_dir(Path(name[10:])) is None:
                raise ModelUnavailable(f"'{spec}' holds {CONFIG_FILE} but no weights file ({WEIGHTS_FILE}).")
            tokenizer = open_clip.get_tokenizer(name)
    except (ModelUnavailable, ModelBroken):
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip, torch and safetensors raise many kinds
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        if name.startswith(("local-dir:", "local-dir-file:")):
            raise ModelBroken(f"The CLIP model at '{spec}' could not be loaded ({why}); restore its files or pass "
                              "another --clip.") from None
        raise _missing(spec, why) from None
    model.eval()
    fingerprint = weights_fingerprint(model.state_dict())
    dim = int(_embed_dim(model))
    model.to(device)
    return ClipModel(model, preprocess, tokenizer, spec, fingerprint, dim, device)


def _load_file_checkpoint(ckpt: Path):
    """A .pt/.safetensors file whose architecture comes from the open_clip_config.json beside it."""
    import open_clip

    name = "local-dir:" + str(ckpt.parent)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "initialized randomly" before we load the file's weights
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, load_weights=False, device="cpu")
    finally:
        root.setLevel(level)
    model.load_state_dict(open_clip.factory.load_state_dict(str(ckpt)), strict=True)
    return model, preprocess, open_clip.get_tokenizer(name)


def _embed_dim(model) -> int:
    import torch

    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return proj.shape[1]
    if isinstance(proj, torch.nn.Linear):
        return proj.out_features
    return model.visual.output_dim
