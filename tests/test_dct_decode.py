"""DCT-scaled JPEG decoding: the picture the model sees is the full decode's, at a fraction of the cost,
and the size an index records is still the photo's own."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest_index import run_cli, tiny_clip_dir  # noqa: F401


def _photo(size=(2400, 1800), orientation: int | None = None) -> bytes:
    """A smooth photo-like JPEG (gradients and a few shapes) with optional EXIF orientation."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([x / w * 255, y / h * 255, (np.sin(x / 97) * np.cos(y / 71) + 1) * 127], axis=-1)
    arr[h // 4: h // 2, w // 5: w // 3] = (230, 40, 30)
    image = Image.fromarray(arr.astype(np.uint8))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("target", [224, 512])
def test_dct_decode_gives_the_full_decodes_picture_after_the_resize(target):
    from discff_cli.engine.preprocess import resize_center_crop
    from index.imageio import decode

    data = _photo()
    full, dct = decode(data, resize_to=target, dct=False), decode(data, resize_to=target, dct=True)
    assert min(full.image.size) == 1800 and target <= min(dct.image.size) < 2 * target  # decoded small
    assert (dct.width, dct.height) == (full.width, full.height) == (2400, 1800)      # the photo's own size
    a = np.asarray(resize_center_crop(full.image, target), np.float32)
    b = np.asarray(resize_center_crop(dct.image, target), np.float32)
    assert np.abs(a - b).mean() < 2.0  # of 255: the same picture


def test_rotated_photos_report_upright_size_and_png_is_never_scaled():
    from index.imageio import decode

    turned = decode(_photo(orientation=6), resize_to=224)
    assert (turned.width, turned.height) == (1800, 2400) and turned.image.height > turned.image.width
    buffer = io.BytesIO()
    Image.new("RGB", (900, 600), (10, 200, 30)).save(buffer, format="PNG")
    png = decode(buffer.getvalue(), resize_to=224)
    assert png.image.size == (900, 600)


def test_small_jpegs_and_no_target_decode_at_full_size():
    from index.imageio import decode

    data = _photo((300, 200))
    assert decode(data, resize_to=224).image.size == (300, 200)  # short side 200 < 224: nothing to gain
    assert decode(_photo(), resize_to=None).image.size == (2400, 1800)


def test_full_decode_flag_reaches_the_build_and_is_recorded(tmp_path, tiny_clip_dir):  # noqa: F811
    """`index build --full-decode` turns DCT scaling off for that build (the manifest says which decode made it)."""
    import json


    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(_photo((900 + 10 * i, 700)))
    for flag, expected in (([], "dct-scaled"), (["--full-decode"], "full")):
        index = tmp_path / f"idx-{expected}"
        result = run_cli("index", "build", str(folder), "--index", str(index), "--clip", str(tiny_clip_dir), *flag)
        assert result.exit_code == 0, result.output
        assert json.loads((index / "manifest.json").read_text())["decode"] == expected
