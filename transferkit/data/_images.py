"""Image files: a cheap but real integrity check, and decoding to RGB (audio: ``_audio.py``).

The check decodes every file once (``verify()`` then a full ``load()``) because a header that
parses says nothing about the pixel data: truncated downloads open fine and only fail when
decoded, which would otherwise happen in the middle of training.
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import UserInputError
from ..errors import shown as printable
from ._filecheck import FileCheck, read_for_check, sha256

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".jfif")

# Human words for the PIL modes that load_image converts; anything else is shown as its code.
MODE_WORDS = {
    "1": "black-and-white (1-bit)", "L": "grayscale", "LA": "grayscale with transparency",
    "La": "grayscale with transparency", "P": "palette", "PA": "palette with transparency",
    "CMYK": "CMYK", "RGBA": "RGB with transparency", "RGBa": "RGB with transparency",
    "RGBX": "RGBX", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV", "I": "32-bit integer",
    "I;16": "16-bit grayscale", "I;16L": "16-bit grayscale", "I;16B": "16-bit grayscale",
    "I;16N": "16-bit grayscale", "F": "32-bit float",
}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _looks_like_text(data: bytes) -> bool:
    head = data[:1024]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


def check_images(paths: Iterable[str | Path]) -> list[FileCheck]:
    """:func:`check_image` over many files, in order, one decoded image in memory at a time.

    Sequential on purpose: Pillow holds the GIL while decoding (threads measured no faster),
    and worker processes are unsafe to fork once a deep-learning runtime is loaded.  Costs
    measured: ~0.15 ms per 28x28 PNG, ~7 ms per 1024x768 JPEG, ~17 ms per 1024x768 PNG.

    Args:
        paths: the files.

    Returns:
        One :class:`FileCheck` per path (small: no pixels are kept).
    """
    with _strict():
        return [_check_one(p) for p in paths]


@contextlib.contextmanager
def _strict() -> Iterator[None]:
    """Bomb warnings as errors, truncated files as errors, whatever the globals say.

    Set once around a run rather than per file: catch_warnings is costly and not thread-safe.
    """
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES  # True would let cut-off files pass
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok


def check_image(path: str | Path) -> FileCheck:
    """Open, verify and fully decode one image file, then drop the pixels.

    Args:
        path: the file.

    Returns:
        A :class:`FileCheck`; never raises for a bad file.
    """
    with _strict():
        return _check_one(path)


def _check_one(path: str | Path) -> FileCheck:
    name = printable(Path(path).name)
    data = read_for_check(path, "check the path (relative paths are resolved from the table's "
                          "folder)", "re-download or re-export it, or delete it")
    if isinstance(data, FileCheck):
        return data
    digest = sha256(data)
    try:
        # Above MAX_IMAGE_PIXELS PIL only warns; the callers turn that warning into an error,
        # because decoding such a file would take gigabytes in the middle of training.
        with Image.open(io.BytesIO(data)) as im:
            mode, size = im.mode, im.size
            im.verify()  # chunk CRCs and structure, without decoding
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":  # decode at 1/8 scale: same stream read, 8x cheaper
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()  # decodes all pixel data: catches truncation
            if im.mode != "RGB":
                _to_rgb(im)  # the conversion load_image will do must work too (e.g. LAB TIFF)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)):,} pixels" if m else "its size"
        return FileCheck(
            "decompression-bomb", f"{size} is over Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS:,}: decoding it could take gigabytes of memory",
            "downscale it (models use ~224x224 pixels anyway); if you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS", sha256=digest)
    except UnidentifiedImageError:
        what = "contains text, not image data" if _looks_like_text(data) else \
            "is not in any image format Pillow can read"
        return FileCheck("not-an-image", f"{name} {what}",
                          f"replace it with a real image or delete it (supported: "
                          f"{', '.join(IMAGE_EXTENSIONS)})", sha256=digest)
    except Exception as e:
        text = str(e) or type(e).__name__
        if "truncat" in text.lower() or isinstance(e, EOFError):
            return FileCheck("truncated", f"the image file is truncated ({text})",
                              "the file was cut short (interrupted download or copy): "
                              "re-download it, or delete it", sha256=digest)
        return FileCheck("unreadable", f"the image data is corrupt ({text})",
                          "re-export or re-download it, or delete it", sha256=digest)
    return FileCheck(None, mode=mode, sha256=digest)


def scale_to_uint8(a: np.ndarray, unit_floats: bool | None = None) -> np.ndarray:
    """Pixel data of any numeric type -> uint8.

    Args:
        a: the pixels.
        unit_floats: for float data, whether the range is [0, 1] (scaled by 255) rather than
            0..255 (clipped); ``None`` decides from this array's own range.

    16-bit integer data is divided by 257 (not clipped at 255, which would turn most pixels
    white); wider integers are scaled by their maximum.
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    is_float = np.issubdtype(a.dtype, np.floating)
    f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    hi = float(f.max()) if f.size else 0.0
    if is_float:
        if unit_floats is None:
            unit_floats = hi <= 1.0 and (float(f.min()) if f.size else 0.0) >= 0.0
        if unit_floats:
            f = f * 255.0
    elif a.dtype == np.uint16 or 255 < hi <= 65535:
        f = f / 257.0
    elif hi > 65535:
        f = f * (255.0 / hi)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is flattened onto white, 16-bit is rescaled."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        # PIL's own convert() clips 16/32-bit values at 255: nearly white images.
        return Image.fromarray(scale_to_uint8(np.asarray(im)), "L").convert("RGB")
    if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def array_to_pil(a: np.ndarray) -> Image.Image:
    """An ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array -> PIL image."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise UserInputError(f"an image array must be (H, W) or (H, W, C) with C in 1, 3, 4; "
                             f"got shape {a.shape}")
    a = scale_to_uint8(a) if a.dtype != np.uint8 else a
    mode = "L" if a.ndim == 2 else ("RGB" if a.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(a), mode)


def load_image(item: Any) -> Image.Image:
    """Decode one image item to an RGB PIL image.

    Args:
        item: a file path, an array ``(H, W)``/``(H, W, C)`` (uint8, or floats in [0, 1]),
            or a PIL image.

    Returns:
        An RGB image. Grayscale, palette, CMYK, transparency (flattened onto white) and
        16-bit data are converted; JPEG EXIF orientation is applied.

    Raises:
        UserInputError: the file cannot be decoded (names the file).
    """
    if isinstance(item, Image.Image):
        return _to_rgb(item)
    if isinstance(item, np.ndarray):
        return _to_rgb(array_to_pil(item))
    try:
        with Image.open(item) as im:
            im.load()
            try:
                im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
            except Exception:
                pass
            return _to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserInputError(f"cannot decode image {printable(str(item))}: {e}",
                             "run the data check (prepare_data) to list every bad file") from None
