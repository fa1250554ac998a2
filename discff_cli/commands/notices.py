"""One warning when the bundled demo models meet images that are not from the demo world.

Why: the demo models were trained on 64x64 scenes of 4 colours x 3 shapes; on a photo they still
return numbers and maps, which mean little. A user should read that before trusting them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

DEMO_SIDE = 64  # every demo-world scene is 64 x 64 pixels (training/world/__init__.py SIZE)
NOTICE = ("warning: the demo model knows only the demo world -- 4 colours (red, green, blue, yellow) x 3 shapes "
          "(circle, square, triangle) on a gray background; on other images its scores and maps mean little.")


def is_demo(model: str | None) -> bool:
    """Whether `model` names the bundled demo diffusion model."""
    from discff_cli.engine.models import DEMO_MODEL_DIR

    if not model:
        return False
    return model == "demo" or Path(model).expanduser().resolve() == DEMO_MODEL_DIR.resolve()


def looks_like_demo_world(size: tuple[int, int]) -> bool:
    return tuple(size) == (DEMO_SIDE, DEMO_SIDE)


def warn_if_demo_on_photos(model: str | None, sizes: Iterable[tuple[int, int]]) -> bool:
    """Print NOTICE on stderr (once) if the demo model is asked about an image the world did not make."""
    if is_demo(model) and any(not looks_like_demo_world(s) for s in sizes):
        print(NOTICE, file=sys.stderr)
        return True
    return False
