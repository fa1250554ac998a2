"""SugarCrepe (Hsieh et al., NeurIPS 2023 D&B) as published at github.com/RAIVNLab/sugar-crepe.

Layout: `data/{add_obj,add_att,replace_obj,replace_att,replace_rel,swap_obj,swap_att}.json`, one
file per category, each a JSON object keyed by a running id:

    {"0": {"filename": "000000544519.jpg",
           "caption": "A girl with a green shirt brushing her teeth with a blue toothbrush.",
           "negative_caption": "A girl with a blue shirt brushing her teeth with a green toothbrush."}, ...}

over the COCO 2017 validation images, which the repo does not ship (its README: "We use images of
COCO-2017 validation set ... for example, data/coco/images/val2017/"; `main_eval.py` opens
`os.path.join(coco_image_root, data['filename'])` and scores `caption` against `negative_caption`,
a hit when the positive scores strictly higher). Each entry becomes
`{"image": ..., "texts": [caption, negative_caption], "answer": 0}`, tagged with its category.
"""

from __future__ import annotations

from pathlib import Path

from discff_cli.evaluation.datasets.common import Draft, FileImage, need_object, need_str, read_json
from discff_cli.errors import DiscffError
from discff_cli.evaluation.items import IMAGE_TO_TEXTS

CATEGORIES = ("add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
IMAGE_DIRS = ("val2017", "images/val2017", "coco/images/val2017", "data/coco/images/val2017", "coco/val2017")


def category_files(path: Path) -> list[Path]:
    """The category JSONs under PATH (the repo root or its data/), in the repo's order; or PATH itself."""
    if path.is_file():
        return [path]
    for folder in (path, path / "data"):
        found = [folder / f"{c}.json" for c in CATEGORIES if (folder / f"{c}.json").is_file()]
        if found:
            return found
    raise DiscffError(f"'{path}' has none of SugarCrepe's category files ({', '.join(c + '.json' for c in CATEGORIES)}); "
                      "point at the repo's data/ folder.")


def image_folder(path: Path, images: Path | None) -> Path:
    """--images, else a COCO val2017 folder found where the SugarCrepe README suggests putting it."""
    if images:
        return images
    roots = [path.parent] if path.is_file() else [path, path.parent]
    for root in roots:
        for rel in IMAGE_DIRS:
            if (root / rel).is_dir():
                return root / rel
    raise DiscffError("SugarCrepe's images are COCO 2017 val, which its repo does not ship: "
                      "pass --images DIR (the extracted val2017 folder).")


def read_category(file: Path, images: Path) -> list[Draft]:
    rows = read_json(file, "SugarCrepe")
    if not isinstance(rows, dict):
        raise DiscffError(f"{file} should be a JSON object of entries keyed by id, as SugarCrepe publishes it.")
    drafts = []
    for key, row in rows.items():
        where = f'entry "{key}"'
        row = need_object(row, file, where)
        image = FileImage(images / need_str(row, "filename", file, where))
        texts = (need_str(row, "caption", file, where), need_str(row, "negative_caption", file, where))
        source = {"benchmark": "sugarcrepe", "file": file.name, "entry": key}
        drafts.append(Draft(IMAGE_TO_TEXTS, (image,), texts, 0, file.stem, source))
    return drafts


def read(path: Path, images: Path | None, cache: Path) -> tuple[list[Draft], str]:
    """Drafts of every entry of every category found, and the image folder to name when images are missing."""
    files = category_files(path)
    folder = image_folder(path, images)
    return [d for file in files for d in read_category(file, folder)], str(folder)
