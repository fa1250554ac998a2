"""The CLI side of CLIP loading: `demo` -> the bundled model, library errors -> user-facing errors.

index/ knows nothing of discff_cli, so the reserved word and the exit codes live here.
"""

from __future__ import annotations

from pathlib import Path

from discff_cli.errors import DiscffError, MissingModelError

DEMO_CLIP_DIR = Path(__file__).parent / "assets" / "demo" / "clip"
DEFAULT_CLIP = "ViT-H-14/laion2b_s32b_b79k"


def resolve_clip(spec: str) -> str:
    """'demo' -> the bundled directory; anything else unchanged."""
    return str(DEMO_CLIP_DIR) if spec == "demo" else spec


def manifest_spec(spec: str) -> str:
    """How an index records its CLIP: 'demo' as is, local paths made absolute, hub names unchanged."""
    if spec == "demo":
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def load_clip_cli(spec: str, device: str = "auto"):
    """load_clip with `demo` resolved and ModelUnavailable turned into MissingModelError (exit 2)."""
    from index.clip_model import load_clip
    from index.errors import IndexError_, ModelUnavailable

    if spec == "demo" and not (DEMO_CLIP_DIR / "open_clip_config.json").is_file():
        raise MissingModelError(f"The bundled demo CLIP is missing from '{DEMO_CLIP_DIR}'; reinstall discff.")
    try:
        return load_clip(resolve_clip(spec), device=device)
    except ModelUnavailable as exc:
        raise MissingModelError(str(exc)) from None
    except IndexError_ as exc:  # a damaged model file, a bad device: one sentence, exit 1
        raise DiscffError(str(exc)) from None


def library_errors():
    """Context manager turning index-library errors into DiscffError (one sentence, exit 1)."""
    from contextlib import contextmanager

    from index.errors import IndexError_, ModelUnavailable

    @contextmanager
    def convert():
        try:
            yield
        except ModelUnavailable as exc:
            raise MissingModelError(str(exc)) from None
        except IndexError_ as exc:
            raise DiscffError(str(exc)) from None

    return convert()
