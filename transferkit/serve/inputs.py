"""Reading /predict requests: JSON texts or multipart images or audio, every limit checked, every failure a
:class:`RequestError` with a status code and a message for the client (never a traceback).

Nothing here opens a path or URL taken from a request: texts are texts, images and audio are the
uploaded bytes.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserInputError
from .settings import ServeSettings


class RequestError(UserInputError):
    """A bad request: ``status`` is the HTTP code, ``code`` a stable slug for clients.

    Args:
        status: 4xx (or 503 for overload / not ready).
        code: e.g. ``"malformed-json"``, ``"too-many-items"``.
        message: what is wrong.
        hint: what to do.
        headers: extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, code: str, message: str, hint: str | None = None,
                 headers: dict[str, str] | None = None):
        self.status, self.code, self.headers = status, code, headers or {}
        super().__init__(message, hint)

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **({"hint": self.hint} if self.hint else {})}


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


#: A request nests 2 levels (an object holding a list of strings); this leaves room for
#: clients' mistakes to be reported by shape while keeping the parser's recursion shallow.
MAX_JSON_DEPTH = 32
#: Each text counts at least this many characters against the queue's and a batch's bounds
#: (an item has a fixed cost in the model however short it is).
TEXT_MIN_COST = 256
#: Each image counts at least this many pixels the same way (the model sees a resized image).
IMAGE_MIN_COST = 256 * 256

# a JSON string, from its opening quote to its closing one or the end of the body: always
# matching from an opening quote, so one left-to-right pass is linear in the body's length
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")
# anything a tokenizer reads: not whitespace, not a control or zero-width character
_VISIBLE = re.compile("[^\\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2060\ufeff]")


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (brackets inside strings do not count);
    checked before parsing so that no body can make the parser recurse deeply."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return min(body.count(b"[") + body.count(b"{"), MAX_JSON_DEPTH)  # cannot be deeper
    structure = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
    step = np.isin(structure, (ord("["), ord("{"))).astype(np.int64) - np.isin(structure, (ord("]"), ord("}")))
    return int(np.cumsum(step).max()) if len(step) else 0


def parse_texts(body: bytes, content_type: str | None, s: ServeSettings) -> list[str]:
    """``{"texts": [str, ...]}`` -> the texts, after every check.

    Raises:
        RequestError: 415 (not JSON), 400 (malformed JSON, nested too deeply), 422 (wrong
            shape, empty, too many items, a text too long, empty or not Unicode).
    """
    mt = media_type(content_type)
    if mt != "application/json":
        raise RequestError(415, "unsupported-media-type",
                           f"this model takes texts as JSON; got content type {mt or '(none)'!r}",
                           'send Content-Type: application/json with {"texts": ["..."]}')
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise _too_deep(depth)
    try:
        doc = json.loads(body.decode("utf-8"))
    except RecursionError:  # not reached after the depth check; kept as the parser's own guard
        raise _too_deep(None) from None
    except UnicodeDecodeError as e:
        raise RequestError(400, "malformed-json", f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:
        raise RequestError(400, "malformed-json", f"the body is not valid JSON: {e}",
                           'send {"texts": ["first text", "second text"]}') from None
    if not isinstance(doc, dict) or "texts" not in doc:
        raise RequestError(422, "invalid-request", 'the JSON body must be an object with a "texts" list',
                           'send {"texts": ["first text", "second text"]}')
    extra = sorted(set(doc) - {"texts"})
    if extra:
        raise RequestError(422, "invalid-request", f"unknown fields: {', '.join(map(str, extra[:10]))}",
                           'the body takes only "texts"')
    texts = doc["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, "invalid-request", f'"texts" must be a list of strings, not {type(texts).__name__}')
    check_count(len(texts), s)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(422, "invalid-request", f"texts[{i}] is {type(t).__name__}, not a string")
        if len(t) > s.max_text_chars:
            raise RequestError(422, "text-too-long", f"texts[{i}] has {len(t):,} characters; the limit is "
                               f"{s.max_text_chars:,}", "split or shorten it (the server's max_text_chars)")
        check_text(t, f"texts[{i}]")
    return texts


def _too_deep(depth: int | None) -> RequestError:
    levels = f"{depth:,} levels" if depth else "too deeply"
    return RequestError(400, "malformed-json", f"the JSON body nests {levels}; the limit is {MAX_JSON_DEPTH}",
                        'send {"texts": ["first text", "second text"]}: an object with a list of strings')


def check_text(text: str, name: str) -> None:
    """Refuse, before it joins a batch, a text the model would fail on or read as nothing.

    Raises:
        RequestError: 422 ``invalid-text`` for a lone surrogate (``"\\ud800"`` in JSON: not
            Unicode text, no tokenizer takes it), ``empty-text`` for a text of nothing but
            whitespace, NUL or other control characters.
    """
    m = _SURROGATE.search(text)
    if m is not None:
        raise RequestError(422, "invalid-text", f"{name} holds a lone surrogate (\\u{ord(m.group()):04x}) at "
                           f"character {m.start()}: it is not Unicode text",
                           "encode the text as UTF-8 before sending; a JSON escape \\ud800-\\udfff must come in "
                           "a valid pair")
    if _VISIBLE.search(text) is None:
        raise RequestError(422, "empty-text", f"{name} is empty or holds only whitespace or control characters "
                           "(NUL ...): there is nothing to predict from", "leave it out of the request")


def text_cost(text: str) -> int:
    """What a text counts against the queue and batch bounds: its characters, at least
    :data:`TEXT_MIN_COST`."""
    return max(len(text), TEXT_MIN_COST)


def check_count(n: int, s: ServeSettings) -> None:
    if n == 0:
        raise RequestError(422, "empty-batch", "nothing to predict: the request holds no items")
    if n > s.max_items:
        raise RequestError(422, "too-many-items", f"{n} items in one request; the limit is {s.max_items}",
                           "send them in several requests")


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """``(width, height)`` from the image's header, without decoding a pixel.

    Raises:
        RequestError: 422 for empty or non-image bytes (the rest is left to :func:`check_image`).
    """
    if not data:
        raise RequestError(422, "empty-file", f"{name} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return (2**31, 1)  # above every limit: check_image says why
    except UnidentifiedImageError:
        raise RequestError(422, "not-an-image", f"{name} is not in any image format Pillow can read",
                           "upload PNG, JPEG, GIF, BMP, TIFF or WebP files") from None
    except Exception as e:  # Pillow raises many types for malformed data
        raise RequestError(422, "corrupt-image", f"{name}: the image header is corrupt ({e or type(e).__name__})") \
            from None


def check_request_pixels(sizes: list[tuple[str, int, int]], s: ServeSettings) -> None:
    """Refuse a request whose images hold too many pixels in all, before any is decoded.

    Args:
        sizes: ``(name, width, height)`` per image.
    """
    total = 0
    for name, w, h in sizes:
        if w * h > s.max_image_pixels:
            raise _bomb(name, w * h, s)
        total += w * h
    if total > s.max_request_pixels:
        raise RequestError(422, "too-many-pixels", f"the {len(sizes)} images of this request hold {total:,} pixels "
                           f"in all; the limit is {s.max_request_pixels:,}",
                           "send fewer images per request, or downscale them")


def image_cost(width: int, height: int) -> int:
    """What an image counts against the queue and batch bounds: its decoded pixels, at least
    :data:`IMAGE_MIN_COST`."""
    return max(width * height, IMAGE_MIN_COST)


def check_image(data: bytes, name: str, s: ServeSettings) -> tuple[int, int]:
    """Fully decode one uploaded image to prove it usable, then drop the pixels.

    Returns:
        ``(width, height)``.

    Raises:
        RequestError: 422 for empty, non-image, truncated or corrupt bytes and for images
            above ``max_image_pixels`` (checked from the header, before decoding).
    """
    if not data:
        raise RequestError(422, "empty-file", f"{name} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > s.max_image_pixels:
                raise _bomb(name, w * h, s)
            if im.format == "JPEG":  # decode at 1/8 scale: the same stream read, 8x cheaper
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
        return w, h
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(name, None, s) from None
    except UnidentifiedImageError:
        raise RequestError(422, "not-an-image", f"{name} is not in any image format Pillow can read",
                           "upload PNG, JPEG, GIF, BMP, TIFF or WebP files") from None
    except Exception as e:  # Pillow raises many types for malformed data
        text = str(e) or type(e).__name__
        kind = "truncated" if "truncat" in text.lower() or isinstance(e, EOFError) else "corrupt"
        raise RequestError(422, f"{kind}-image", f"{name}: the image data is {kind} ({text})") from None


def _bomb(name: str, pixels: int | None, s: ServeSettings) -> RequestError:
    size = f"{pixels:,} pixels" if pixels else "its size"
    return RequestError(422, "image-too-large", f"{name}: {size} is over the server's limit of "
                        f"{s.max_image_pixels:,} pixels (a decompression bomb, or simply too large)",
                        "downscale it: the model sees a few hundred pixels a side anyway")


def decode_image(data: bytes) -> np.ndarray:
    """Uploaded bytes (already checked) -> ``(H, W, 3)`` uint8 RGB, EXIF rotation applied,
    transparency flattened onto white, as :func:`transferkit.data.load_image` does for files."""
    from ..data._images import _to_rgb

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # broken EXIF must not lose the image
            pass
        return np.asarray(_to_rgb(im))


#: Each audio clip counts at least this many milliseconds against the queue's and a batch's bounds.
AUDIO_MIN_COST_MS = 1000
#: Uploaded audio is decoded and resampled to this rate once, in the worker: the audio backbones
#: resample from it to their own, and the classical features read it.
AUDIO_RATE = 16000


def check_audio(data: bytes, name: str, s: ServeSettings) -> int:
    """Fully decode one uploaded clip to prove it usable, then drop the samples; its cost in
    milliseconds (at least :data:`AUDIO_MIN_COST_MS`).

    Raises:
        RequestError: 422 for bytes that are not decodable audio, a cut or empty clip, NaN
            samples, or a clip longer than ``max_audio_ms``.
    """
    from ..data._audio import decode_audio

    try:
        wave, rate, truncated = decode_audio(data, "")
    except ImportError:
        raise RequestError(422, "unsupported-audio", f"{name}: this server cannot decode compressed audio "
                           "(soundfile is not installed)", "send 16-bit PCM WAV, or install 'transferkit[audio]'") \
            from None
    except ValueError as e:
        raise RequestError(422, "not-audio", f"{name} is not audio that can be decoded ({e})",
                           "send WAV, FLAC, OGG or MP3") from None
    if truncated or wave.size == 0:
        raise RequestError(422, "truncated-audio", f"{name}: the audio is cut short or has no samples",
                           "re-export the file")
    if not np.isfinite(wave).all():
        raise RequestError(422, "corrupt-audio", f"{name}: the audio holds NaN or infinite samples")
    ms = int(1000 * len(wave) / rate)
    if ms > s.max_audio_ms:
        raise RequestError(422, "audio-too-long", f"{name}: {ms / 1000:.1f} s of audio is over the server's limit "
                           f"of {s.max_audio_ms / 1000:g} s", "cut the recording into shorter clips")
    return max(ms, AUDIO_MIN_COST_MS)


def decode_audio_upload(data: bytes) -> np.ndarray:
    """Checked upload bytes -> mono float32 ``(T,)`` at :data:`AUDIO_RATE`."""
    from ..data._audio import decode_audio, resample

    wave, rate, _ = decode_audio(data, "")
    return resample(wave, rate, AUDIO_RATE)
