"""Generated files for the data-layer tests: real digits as PNGs and the ways files go bad."""
from __future__ import annotations

import io
import os
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPAM = Path(os.environ.get("TRANSFERKIT_SHARED_DATA", SHARED)) / "spamassassin.jsonl.gz"
MNIST = SPAM.parent / "mnist_5k.csv.gz"


def digit_arrays(n: int, classes=range(10)) -> tuple[list[np.ndarray], list[int]]:
    """``n`` real handwritten digits per class from scikit-learn, as 8x8 uint8 (0..255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    xs, ys = [], []
    for c in classes:
        idx = np.flatnonzero(d.target == c)[:n]
        xs += [np.clip(d.images[i] * 16, 0, 255).astype(np.uint8) for i in idx]
        ys += [int(c)] * len(idx)
    return xs, ys


def write_digit_folder(root: Path, n: int = 2, classes=range(10), mode: str = "RGB") -> list[Path]:
    """One subfolder per class with ``n`` real digits each, saved as PNG in ``mode``."""
    paths = []
    for k, (x, y) in enumerate(zip(*digit_arrays(n, classes))):
        d = root / str(y)
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"d{k:03d}.png"
        Image.fromarray(x).convert(mode).save(p)
        paths.append(p)
    return paths


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def bomb_png(width: int = 14000, height: int = 14000) -> bytes:
    """A valid 1-bit PNG of zeros whose pixel count exceeds 2x PIL's MAX_IMAGE_PIXELS.

    Built chunk by chunk (24 KB on disk) because asking PIL to make it would allocate it.
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def add_bad_images(class_dir: Path, good_png: Path) -> dict[str, str]:
    """The five ways an image file goes bad; returns ``{file name: expected kind}``."""
    class_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = good_png.read_bytes()
    (class_dir / "corrupt.png").write_bytes(rng.integers(0, 256, 600, dtype=np.uint8).tobytes())
    (class_dir / "half.png").write_bytes(data[: len(data) // 2])
    (class_dir / "zero.jpg").write_bytes(b"")
    (class_dir / "bomb.png").write_bytes(bomb_png())
    (class_dir / "notes.png").write_text("these are my notes, not a picture\n" * 5)
    return {"corrupt.png": "not-an-image", "half.png": "truncated", "zero.jpg": "empty-file",
            "bomb.png": "decompression-bomb", "notes.png": "not-an-image"}


def add_mode_images(class_dir: Path, x: np.ndarray) -> dict[str, str]:
    """A digit as grayscale, palette, CMYK JPEG and RGBA PNG; returns ``{name: PIL mode}``."""
    class_dir.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(x)
    img.save(class_dir / "gray.png")
    img.convert("P").save(class_dir / "palette.png")
    img.convert("CMYK").save(class_dir / "cmyk.jpg")
    rgba = img.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(class_dir / "alpha.png")
    return {"gray.png": "L", "palette.png": "P", "cmyk.jpg": "CMYK", "alpha.png": "RGBA"}


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, width: int = 2,
              channels: int = 1) -> None:
    """PCM WAV from floats in [-1, 1]: ``samples`` is ``(T,)`` or ``(T, channels)``."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1, channels)
    if width == 1:
        raw = np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.clip(np.round(x * (2**23 - 1)), -(2**23), 2**23 - 1).astype("<i4").reshape(-1)
        raw = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = np.clip(np.round(x * (2 ** (8 * width - 1) - 1)), -(2 ** (8 * width - 1)),
                      2 ** (8 * width - 1) - 1).astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def float_wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    """A 32-bit float WAV (format tag 3), which Python 3.11's ``wave`` cannot read."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sine(seconds: float = 0.25, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)
