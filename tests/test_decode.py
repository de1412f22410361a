"""Decoding real photos in every format and pixel mode faceid promises to read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceid_tui.engine.decode import MAX_PIXELS, load_rgb
from faceid_tui.errors import ImageDecodeError

PHOTO = "identities/barack_obama/obama.jpg"


@pytest.fixture(scope="module")
def source(faces_dir: Path) -> Image.Image:
    return Image.open(faces_dir / PHOTO).convert("RGB")


@pytest.mark.parametrize(
    ("suffix", "mode", "save_args"),
    [
        (".png", "RGB", {}),
        (".png", "RGBA", {}),
        (".png", "L", {}),
        (".png", "P", {}),
        (".webp", "RGB", {}),
        (".bmp", "RGB", {}),
        (".tiff", "RGB", {}),
        (".jpg", "CMYK", {}),
        (".jpg", "L", {}),
    ],
)
def test_formats_and_modes_decode_to_rgb(tmp_path: Path, source: Image.Image, suffix: str,
                                         mode: str, save_args: dict) -> None:
    path = tmp_path / f"photo{suffix}"
    source.convert(mode).save(path, **save_args)
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (source.height, source.width, 3)
    reference = np.asarray(source.convert("L"), dtype=np.float32)
    # Same picture: mean brightness within a few levels of the original (CMYK/P included).
    assert abs(float(rgb.mean()) - float(reference.mean())) < 12


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path, source: Image.Image) -> None:
    gray = np.asarray(source.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    path = tmp_path / "deep.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_rgb(path)
    assert abs(float(rgb[..., 0].mean()) - float((gray / 257).mean())) < 1.0


def test_transparent_areas_become_white(tmp_path: Path, source: Image.Image) -> None:
    rgba = source.convert("RGBA")
    alpha = np.full((source.height, source.width), 255, dtype=np.uint8)
    alpha[:20, :20] = 0
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    rgb = load_rgb(path)
    assert (rgb[:20, :20] == 255).all()


def test_exif_orientation_is_honoured(tmp_path: Path, source: Image.Image) -> None:
    rotated = source.transpose(Image.Transpose.ROTATE_90)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif, quality=95)
    rgb = load_rgb(path)
    assert rgb.shape[:2] == (source.height, source.width)  # upright again


def test_first_frame_of_an_animation(tmp_path: Path, source: Image.Image) -> None:
    frames = [source.convert("P"), source.convert("L").convert("P")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_rgb(path).shape == (source.height, source.width, 3)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path, data: path.write_bytes(b""), "empty file"),
        (lambda path, data: path.write_text("this is not a photo\n"), "not an image"),
        (lambda path, data: path.write_bytes(data[: len(data) // 3]), "truncated"),
    ],
    ids=["zero-bytes", "text-named-jpg", "truncated-jpeg"],
)
def test_broken_files_give_one_line_reasons(tmp_path: Path, faces_dir: Path, make,
                                            reason: str) -> None:
    path = tmp_path / "broken.jpg"
    make(path, (faces_dir / PHOTO).read_bytes())
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(path)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    side = int(MAX_PIXELS**0.5) + 100
    path = tmp_path / "bomb.png"
    # A 1-bit image compresses to almost nothing, yet claims a huge pixel count.
    Image.new("1", (side, side)).save(path, optimize=True)
    assert path.stat().st_size < 5_000_000
    with pytest.raises(ImageDecodeError, match="too large"):
        load_rgb(path)
