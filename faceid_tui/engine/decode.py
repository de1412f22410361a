"""Decode photos into RGB ``uint8`` arrays: every common format and pixel mode, EXIF-upright.

Pillow does the decoding; this module normalises what comes out (grayscale, alpha, 16-bit,
CMYK, palettes) and turns every failure into a one-line :class:`ImageDecodeError`.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from faceid_tui.errors import ImageDecodeError

#: Largest photo decoded: 120 megapixels, above the biggest phone sensors (108 Mpx). Anything
#: larger is refused from its header, before its pixels are decoded, so a tiny file that
#: claims a gigantic size (a decompression bomb) cannot exhaust memory: decoding stays under
#: about 120 M × 3 bytes = 360 MB for the pixels, twice that with the array copy.
MAX_PIXELS = 120_000_000

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm",
     ".heic", ".heif"}
)

# Phones save HEIC/HEIF; pillow-heif teaches Pillow to open them.
pillow_heif.register_heif_opener()


def is_image_name(path: Path) -> bool:
    """True when the file name looks like a photo faceid should read (by its extension)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def load_rgb(path: Path | bytes) -> np.ndarray:
    """Read ``path`` (or decode the bytes of an image file, e.g. a sample kept in a shared
    bank) and return an upright ``H×W×3`` RGB ``uint8`` array.

    Raises :class:`ImageDecodeError` with a one-line reason for anything that is not a
    decodable image (empty, truncated, not an image, too large).
    """
    if isinstance(path, bytes | bytearray):
        source: Path | io.BytesIO = io.BytesIO(path)
        size = len(path)
    else:
        source = path = Path(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageDecodeError("file not found") from None
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns before its own bomb error; we check the size ourselves below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageDecodeError(
                        f"image too large: {width}×{height} pixels exceeds the limit of "
                        f"{MAX_PIXELS:,} pixels"
                    )
                image.seek(0)  # first frame of animations and multi-page files
                image.load()
                return pil_to_rgb(image)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can read (unknown or damaged format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}") from None
    except MemoryError:
        raise ImageDecodeError("not enough memory to decode this image") from None
    except Exception as exc:  # damaged files make decoders raise almost anything
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated or incomplete image data"
        elif not isinstance(exc, OSError | ValueError | SyntaxError | EOFError):
            reason = f"{type(exc).__name__}: {reason}"
        raise ImageDecodeError(f"cannot decode image: {reason[:200]}") from None


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to an upright RGB ``uint8`` array."""
    # A broken EXIF block must not lose the photo itself: then it is used as stored.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: Pillow's own convert("L") clips instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        # Transparent areas become white, as a viewer would show them, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
