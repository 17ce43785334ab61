"""Open images from paths or data URLs, upright and RGB, with errors that name the input."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from facellm.errors import FacellmError

MAX_IMAGE_PIXELS = 50_000_000  # PIL's decompression-bomb guard: refuse anything larger
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class ImageError(FacellmError, ValueError):
    """An input that is not a usable image; the message names the input."""


def _open(data: io.BytesIO | Path, name: str) -> Image.Image:
    try:
        with Image.open(data) as img:
            img.seek(0)  # animated images: the first frame
            img.load()
            return _eight_bit(ImageOps.exif_transpose(img)).convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image too large ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and float images scaled to 8 bits: PIL's own conversion clips them (a 16-bit photo turns white)."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    import numpy as np

    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = max(float(values.max()), 1e-12)
    else:  # integers: 16-bit unless the values fit 8 bits
        top = 65535.0 if values.max() > 255 else 255.0
    return Image.fromarray(np.clip(values / top * 255, 0, 255).round().astype(np.uint8), "L")


def load_image(ref: str | Path | bytes, base_dir: str | Path | None = None) -> Image.Image:
    """An RGB PIL image from a file path (relative to ``base_dir``), a ``data:image/...;base64,`` URL or the
    encoded bytes of an image (a dataset's embedded image)."""
    if isinstance(ref, bytes):
        return load_image_bytes(ref, "embedded image")
    ref_s = str(ref)
    if ref_s.startswith("data:"):
        header, _, payload = ref_s.partition(",")
        if not header.startswith("data:image/") or ";base64" not in header:
            raise ImageError(f"data URL ({header[:40]}...): expected data:image/<type>;base64,...")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError(f"data URL ({header}): invalid base64") from None
        return _open(io.BytesIO(raw), f"data URL ({header})")
    if "://" in ref_s:
        raise ImageError(f"{ref_s[:80]}: remote URLs are not fetched; pass a local path or a data URL")
    path = Path(base_dir, ref_s) if base_dir else Path(ref_s)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    return _open(path, str(path))


def image_size(ref: str | Path | bytes, base_dir: str | Path | None = None) -> tuple[int, int]:
    """(width, height) of a file path (relative to ``base_dir``) or encoded bytes, from the header only."""
    with Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else Path(base_dir or "", ref)) as img:
        return img.size


def load_image_bytes(data: bytes, name: str) -> Image.Image:
    """An RGB PIL image from encoded bytes (e.g. a ``datasets`` Image cell); ``name`` labels errors."""
    return _open(io.BytesIO(data), name)


def to_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()
