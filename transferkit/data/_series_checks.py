"""Pre-flight checks of time-series items: what an encoder cannot use, named by origin.

Errors (dropped by ``--skip-bad``): not a numeric ``(C, T)`` array, missing values (NaN/inf;
``?`` in ``.ts`` files), shorter than :data:`MIN_LENGTH`, a channel count other than the
set's.  Warnings (kept): a constant series (z-normalisation makes it all zeros: it carries no
shape), lengths that differ (padded with a mask by the encoder; "wildly" when 4x apart).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import shown as printable
from .dataset import Dataset
from .report import ValidationReport

MIN_LENGTH = 4  # time steps: fewer carry no shape a convolution can pick up (UEA JapaneseVowels has 7)
LENGTH_RATIO = 4.0  # longest / shortest from which lengths count as wildly different


def check_series(ds: Dataset, report: ValidationReport, split: str) -> None:
    """Check every series of ``ds`` (float arrays ``(C, T)``) and record problems by origin."""
    shapes: dict[int, tuple[int, int]] = {}
    constant = []
    for i, x in enumerate(ds.inputs):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind != "f":
            what = type(x).__name__ if not isinstance(x, np.ndarray) else f"{x.dtype} array {x.shape}"
            report.add("error", "bad-series", ds.origins[i], f"a series item is a {printable(what)}, "
                       "not float values (C, T)", "read series with the time-series readers or "
                       "from_arrays(X, y, modality='timeseries')", item=i, split=split)
            continue
        c, t = x.shape
        shapes[i] = (c, t)
        bad = ~np.isfinite(x)
        if bad.any():
            steps = np.flatnonzero(bad.any(axis=0))
            shown = ", ".join(str(s) for s in steps[:5]) + (" ..." if len(steps) > 5 else "")
            report.add("error", "missing-values", ds.origins[i], f"{int(bad.sum())} of {x.size} values "
                       f"are missing (NaN, infinite or '?') at time step(s) {shown}",
                       "fill them in (e.g. interpolate) or remove the series; --skip-bad leaves it out",
                       item=i, split=split)
        elif t >= MIN_LENGTH and np.all(np.ptp(x, axis=1) == 0):
            constant.append(i)
        if t < MIN_LENGTH:
            report.add("error", "too-short", ds.origins[i], f"the series has {t} time step(s); at "
                       f"least {MIN_LENGTH} are needed", "remove it, or join it with its neighbours",
                       item=i, split=split)
    if constant:
        report.add("warning", "constant-series", f"{split} set", f"{len(constant)} series "
                   f"{'is' if len(constant) == 1 else 'are'} constant (e.g. "
                   f"{printable(ds.origins[constant[0]])}): z-normalised they are all zeros and "
                   "carry no shape", "check the sensor; remove them if they are faults", split=split)
    if not shapes:
        return
    channels = Counter(c for c, _ in shapes.values())
    usual = channels.most_common(1)[0][0]
    for i, (c, _) in shapes.items():
        if c != usual:
            report.add("error", "channel-count", ds.origins[i], f"the series has {c} channel(s); "
                       f"the others have {usual}", "give every series the same channels",
                       item=i, split=split)
    lengths = {i: t for i, (_, t) in shapes.items()}
    short, long_ = min(lengths, key=lengths.get), max(lengths, key=lengths.get)
    if lengths[long_] != lengths[short]:
        wild = lengths[long_] >= LENGTH_RATIO * max(lengths[short], 1)
        report.add("warning", "unequal-lengths", f"{split} set",
                   f"series lengths {'differ widely' if wild else 'differ'}: {lengths[short]} time steps "
                   f"({printable(ds.origins[short])}) to {lengths[long_]} ({printable(ds.origins[long_])}); "
                   "the encoder pads each batch to its longest series and masks the padding",
                   "resample them to one length if they cover the same time span at different rates"
                   if wild else "nothing to do", split=split)
