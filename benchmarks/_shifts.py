"""The domain shifts of ``bench_shifts.py``, built from data the project has (no download).

Each shift is three disjoint labelled sets: ``source`` (the labelled training items),
``target`` (the target items: given to the strategies without their labels, and scored — the
transductive protocol of ``bench_adapt.py``), and ``pool`` (other target items, from which the
target-supervised reference draws its labelled items; never scored).  Every subset is stratified
and seeded, so a rerun with the same sizes builds the same items.

Image transforms (uint8 in, uint8 out):

- ``inverted``: ``255 - value`` (black digits on white, 28 x 28 grey);
- ``coloured``: each digit drawn in an ink colour on a background colour, both drawn per item
  uniformly in RGB (seeded) and at least 120 apart (Euclidean, 0-255 scale) so the digit stays
  visible: ``bg * (1 - v / 255) + ink * v / 255``, 28 x 28 x 3;
- ``ink_on_white``: scikit-learn's 8 x 8 digits (values 0-16) as dark ink on white:
  ``255 - v * 255 / 16``, resized to 32 x 32 (PIL bilinear), repeated over 3 channels (RGB) —
  the new user's shift of the issue rebuilt with the digits the project has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import _common as C

SPAM_OPTIONS = {"max_length": 128, "max_chunks": 1}  # the reading of bench_selection's spam rows


@dataclass
class Shift:
    """One shift: ``source``, ``target`` and ``pool`` are labelled :class:`~transferkit.data.Dataset`s."""

    name: str
    modality: str
    model: str
    options: dict
    how: str
    source: object
    target: object
    pool: object
    sizes: dict = field(default_factory=dict)


def inverted(images: np.ndarray) -> np.ndarray:
    return (255 - images).astype(np.uint8)


def coloured(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(N, H, W)`` white-on-black uint8 -> ``(N, H, W, 3)``: a random ink on a random background."""
    rng = np.random.default_rng(seed)
    out = np.empty(images.shape + (3,), dtype=np.uint8)
    for i, im in enumerate(images):
        while True:
            bg, ink = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            if np.linalg.norm(bg - ink) >= 120:
                break
        a = im.astype(np.float64)[..., None] / 255.0
        out[i] = np.clip(np.round(bg * (1 - a) + ink * a), 0, 255).astype(np.uint8)
    return out


def ink_on_white(digits: np.ndarray) -> np.ndarray:
    """``(N, 8, 8)`` scikit-learn digits (0-16) -> ``(N, 32, 32, 3)`` dark ink on white, uint8."""
    from PIL import Image

    grey = np.round(255.0 - digits * (255.0 / 16.0)).astype(np.uint8)
    big = [np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR)) for g in grey]
    return np.repeat(np.stack(big)[..., None], 3, axis=3)


def _split(labels, sizes: list[int], seed: int) -> list[list[int]]:
    """Disjoint stratified index sets of the given sizes (the last may be ``-1``: every item left)."""
    labels = list(labels)
    left = list(range(len(labels)))
    out = []
    for k, n in enumerate(sizes):
        if n < 0 or n >= len(left):
            out.append(left)
            left = []
            continue
        pick = C.stratified_indices([labels[i] for i in left], n, seed=seed + k)
        chosen = [left[i] for i in pick]
        out.append(chosen)
        taken = set(chosen)
        left = [i for i in left if i not in taken]
    return out


def _images(arr: np.ndarray, labels: np.ndarray, idx: list[int]):
    from transferkit.data import from_arrays

    return from_arrays(arr[idx], [str(labels[i]) for i in idx], modality="image")


def build(names: list[str], n_source: int, n_target: int, image_size: int, seed: int = 0) -> dict[str, Shift]:
    """The named shifts with ``n_source`` source and up to ``n_target`` target items each."""
    from sklearn.datasets import load_digits

    out: dict[str, Shift] = {}
    img_opts = {"image_size": image_size}
    model = "efficientnet-lite0"
    if any(n != "spam-2002->2003" for n in names):
        mnist, ym = C.load_mnist()
        d = load_digits()
        digits = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        yd = d.target
        # MNIST-5k: source, target and pool disjoint, whichever shift uses them
        m_src, m_tgt, m_pool = _split(ym, [n_source, n_target, -1], seed)
        # digits (1,797): as source (n_source) or as target (n_target), the rest the pool
        d_src, _ = _split(yd, [n_source, -1], seed)
        d_tgt, d_pool = _split(yd, [n_target, -1], seed + 10)
        ink = ink_on_white(d.images)
        specs = {
            "mnist->digits": ("MNIST-5k (28 x 28 grey) -> scikit-learn digits (8 x 8 grey, 0-16 scaled to 0-255)",
                              _images(mnist, ym, m_src), _images(digits, yd, d_tgt), _images(digits, yd, d_pool)),
            "digits->mnist": ("scikit-learn digits -> MNIST-5k",
                              _images(digits, yd, d_src), _images(mnist, ym, m_tgt), _images(mnist, ym, m_pool)),
            "mnist->inverted": ("MNIST-5k -> other MNIST-5k digits with inverted polarity (black on white)",
                                _images(mnist, ym, m_src), _images(inverted(mnist), ym, m_tgt),
                                _images(inverted(mnist), ym, m_pool)),
            "mnist->coloured": ("MNIST-5k -> other MNIST-5k digits in a random ink on a random background (RGB)",
                                _images(mnist, ym, m_src), _images(coloured(mnist, seed), ym, m_tgt),
                                _images(coloured(mnist, seed), ym, m_pool)),
            "mnist->ink-digits": ("MNIST-5k -> scikit-learn digits as dark ink on white, 32 x 32 RGB (the issue's "
                                  "new-user shift)", _images(mnist, ym, m_src), _images(ink, yd, d_tgt),
                                  _images(ink, yd, d_pool)),
        }
        for name in names:
            if name in specs:
                how, s, t, p = specs[name]
                out[name] = Shift(name, "image", model, img_opts, how, s, t, p)
    if "spam-2002->2003" in names:
        rows = C.load_spam()
        y02 = [i for i, r in enumerate(rows) if r["group"] in ("easy-ham-1", "spam-1")]
        y03 = [i for i, r in enumerate(rows) if r["group"] in ("easy-ham-2", "spam-2")]
        (s,) = _split([rows[i]["label"] for i in y02], [n_source], seed)[:1]
        t, p = _split([rows[i]["label"] for i in y03], [n_target, -1], seed)
        out["spam-2002->2003"] = Shift(
            "spam-2002->2003", "text", "minilm-l6", dict(SPAM_OPTIONS),
            "SpamAssassin 2002 (easy-ham-1 + spam-1) -> 2003 (easy-ham-2 + spam-2), subject + body",
            C.spam_dataset(rows, [y02[i] for i in s]), C.spam_dataset(rows, [y03[i] for i in t]),
            C.spam_dataset(rows, [y03[i] for i in p]))
    unknown = sorted(set(names) - set(out))
    if unknown:
        raise SystemExit(f"unknown shift(s) {unknown}; choose among {', '.join(ALL)}")
    for sh in out.values():
        sh.sizes = {"source": len(sh.source), "target": len(sh.target), "pool": len(sh.pool)}
    return out


ALL = ["mnist->ink-digits", "mnist->inverted", "mnist->coloured", "mnist->digits", "digits->mnist",
       "spam-2002->2003"]
