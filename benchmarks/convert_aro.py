"""How long `discff eval --benchmark aro-relation` spends preparing ARO's crops before any model runs.

    python benchmarks/convert_aro.py --images 300 --cases 3000

Writes `--images` Visual-Genome-sized JPEGs (500x375, random content) and `--cases` test cases in
ARO's visual_genome_relation.json layout (random boxes, 48 relations) into a temp folder, then times
`load_benchmark` twice: the first run crops, writes and checks every crop; the second finds them
all in the cache. Prints crops/s for both and the extrapolation to VG-Relation's ~24k cases.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_layout(root: Path, n_images: int, n_cases: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    for i in range(n_images):
        pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg", quality=90)
    cases = []
    for c in range(n_cases):
        x, y = int(rng.integers(0, 300)), int(rng.integers(0, 200))
        w, h = int(rng.integers(40, 500 - x)), int(rng.integers(40, 375 - y))
        cases.append({"image_path": f"{c % n_images}.jpg", "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h,
                      "true_caption": "the a is on the b", "false_caption": "the b is on the a",
                      "relation_name": f"rel{c % 48}"})
    (root / "visual_genome_relation.json").write_text(json.dumps(cases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from discff_cli.evaluation.datasets import load_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "aro"
        make_layout(root, args.images, args.cases, args.seed)
        out = Path(tmp) / "out" / "vgr.jsonl"
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            items = load_benchmark("aro-relation", root, write_jsonl=out)
            timings.append(time.perf_counter() - start)
        assert len(items) == args.cases
        first, cached = (args.cases / t for t in timings)
        print(json.dumps({"cases": args.cases, "images": args.images, "first_run_s": round(timings[0], 2),
                          "first_run_crops_per_s": round(first, 1), "cached_run_s": round(timings[1], 2),
                          "cached_run_crops_per_s": round(cached, 1),
                          "vg_relation_23937_first_run_min": round(23937 / first / 60, 1)}))


if __name__ == "__main__":
    main()
