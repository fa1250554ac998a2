"""ARO's VG-Relation and VG-Attribution (Yuksekgonul et al., ICLR 2023) as published with
github.com/mertyg/vision-language-models-are-bows (`dataset_zoo/aro_datasets.py`).

Layout: a root folder with `visual_genome_relation.json` / `visual_genome_attribution.json` and
`images/` (the unzipped `vgr_vga_images.zip`, a subset of GQA/Visual Genome). Each JSON is a list
of test cases:

    {"image_path": "2339.jpg", "bbox_x": 12, "bbox_y": 40, "bbox_w": 300, "bbox_h": 200,
     "true_caption": "the horse is eating the grass", "false_caption": "the grass is eating the horse",
     "relation_name": "eating"}                              # VG-Relation
    {..., "attributes": ["white", "black"]}                  # VG-Attribution, instead of relation_name

ARO scores each case on a crop: `Image.open(image_path).convert('RGB').crop((bbox_x, bbox_y,
bbox_x + bbox_w, bbox_y + bbox_h))` ("to remove the irrelevant details in the scene"), with
`caption_options = [false_caption, true_caption]` and a hit when the second scores higher. The same
crop is made here (once, cached as PNG) and each case becomes
`{"image": crop, "texts": [false_caption, true_caption], "answer": 1}` (ties are misses, as
ARO's argmax makes them). Tags: `relation_name`; for attribution `f"{attributes[0]}_{attributes[1]}"`,
ARO's own grouping (its evaluate_scores reports each relation, and each attribute pair with at
least 25 cases).
"""

from __future__ import annotations

from pathlib import Path

from discff_cli.evaluation.datasets.common import (CropImage, Draft, need_number, need_object, need_str, read_json,
                                          row_error)
from discff_cli.errors import DiscffError
from discff_cli.evaluation.items import IMAGE_TO_TEXTS

FILES = {"relation": "visual_genome_relation.json", "attribution": "visual_genome_attribution.json"}


def _annotation_file(path: Path, variant: str) -> Path:
    name = FILES[variant]
    if path.is_file():
        return path
    if (path / name).is_file():
        return path / name
    raise DiscffError(f"'{path}' has no {name}: point at ARO's root folder (with {name} and images/) "
                      "or at the JSON file itself.")


def _tag(row: dict, variant: str, file: Path, where: str) -> str:
    if variant == "relation":
        return need_str(row, "relation_name", file, where)
    attributes = row.get("attributes")
    if (not isinstance(attributes, list) or len(attributes) != 2
            or not all(isinstance(a, str) and a.strip() for a in attributes)):
        raise row_error(file, where, '"attributes" must be a list of two non-empty strings')
    return f"{attributes[0]}_{attributes[1]}"


def draft_of(row: dict, variant: str, images: Path, file: Path, index: int) -> Draft:
    """One test case -> a two-caption choice on its crop (validated field by field)."""
    where = f"entry [{index}]"
    row = need_object(row, file, where)
    image = need_str(row, "image_path", file, where)
    x, y = need_number(row, "bbox_x", file, where), need_number(row, "bbox_y", file, where)
    w = need_number(row, "bbox_w", file, where, positive=True)
    h = need_number(row, "bbox_h", file, where, positive=True)
    texts = (need_str(row, "false_caption", file, where), need_str(row, "true_caption", file, where))
    tag = _tag(row, variant, file, where)
    source = {"benchmark": f"aro-{variant}", "file": file.name, "entry": index, "image_path": image,
              "bbox": [x, y, w, h]}
    return Draft(IMAGE_TO_TEXTS, (CropImage(images / image, (x, y, x + w, y + h)),), texts, 1, tag, source)


def read(path: Path, images: Path | None, cache: Path, variant: str) -> tuple[list[Draft], str]:
    """Drafts of every test case, and the image folder to name when images are missing."""
    file = _annotation_file(path, variant)
    rows = read_json(file, f"ARO {variant}")
    if not isinstance(rows, list):
        raise DiscffError(f"{file} should be a JSON list of test cases, as ARO publishes it.")
    folder = images or file.parent / "images"
    return [draft_of(row, variant, folder, file, i) for i, row in enumerate(rows)], str(folder)


def read_relation(path: Path, images: Path | None, cache: Path) -> tuple[list[Draft], str]:
    return read(path, images, cache, "relation")


def read_attribution(path: Path, images: Path | None, cache: Path) -> tuple[list[Draft], str]:
    return read(path, images, cache, "attribution")
