"""Open images from paths or data URLs, upright and RGB, with errors that name the input."""

from __future__ import annotations

import base64
import binascii
import io
import logging
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from facellm.errors import FacellmError

MAX_IMAGE_PIXELS = 50_000_000  # refuse anything larger before decoding it (a decompression bomb)
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL's own guard, for code that opens images without this module

# photo formats only: PIL also opens formats that run other programs (EPS runs Ghostscript) or that no
# camera or browser makes
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO (phones' multi-picture JPEGs)
ORIENTATION = 0x0112  # the EXIF tag

log = logging.getLogger(__name__)


class ImageError(FacellmError, ValueError):
    """An input that is not a usable image; the message names the input."""


def _decode(data: io.BytesIO | Path, name: str) -> tuple[Image.Image, bool]:
    """The upright RGB image, and whether that is the file's own pixels (an 8-bit RGB or grey single frame,
    no EXIF rotation): what any decoder makes of it. Messages say what is wrong for a person to act on; the
    decoder's own words go to the debug log."""
    try:
        with Image.open(data, formats=FORMATS) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:  # from the header, before decoding (PIL only warns below 2x)
                raise ImageError(f"{name}: image too large ({width}x{height} pixels; the limit is "
                                 f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels)")
            as_stored = (img.mode in ("RGB", "L") and getattr(img, "n_frames", 1) == 1
                         and img.getexif().get(ORIENTATION, 1) == 1)
            img.seek(0)  # animated images: the first frame
            img.load()
            return _eight_bit(ImageOps.exif_transpose(img)).convert("RGB"), as_stored
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large (over {MAX_IMAGE_PIXELS / 1e6:g} megapixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        log.debug("%s: %s: %s", name, type(e).__name__, e)
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or not an image file)") from None


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
    return decode_image(ref, base_dir)[0]


def decode_image(ref: str | Path | bytes, base_dir: str | Path | None = None) -> tuple[Image.Image, bool]:
    """:func:`load_image`'s image, and whether it holds the file's own pixels (see :func:`_decode`)."""
    if isinstance(ref, bytes):
        return _decode(io.BytesIO(ref), "embedded image")
    ref_s = str(ref)
    if ref_s.startswith("data:"):
        header, _, payload = ref_s.partition(",")
        if not header.startswith("data:image/") or ";base64" not in header:
            raise ImageError(f"data URL ({header[:40]}...): expected data:image/<type>;base64,...")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError(f"data URL ({header}): invalid base64") from None
        return _decode(io.BytesIO(raw), f"data URL ({header})")
    if "://" in ref_s:
        raise ImageError(f"{ref_s[:80]}: remote URLs are not fetched; pass a local path or a data URL")
    path = Path(base_dir, ref_s) if base_dir else Path(ref_s)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    return _decode(path, str(path))


def image_size(ref: str | Path | bytes, base_dir: str | Path | None = None) -> tuple[int, int]:
    """(width, height) of a file path (relative to ``base_dir``) or encoded bytes, from the header only."""
    with Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else Path(base_dir or "", ref)) as img:
        return img.size


def load_image_bytes(data: bytes, name: str) -> Image.Image:
    """An RGB PIL image from encoded bytes (e.g. a ``datasets`` Image cell); ``name`` labels errors."""
    return _decode(io.BytesIO(data), name)[0]


def to_data_url(image: Image.Image, fmt: str = "PNG", **save_options) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_options)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()
