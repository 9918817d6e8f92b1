"""Give freed heap memory back to the operating system (glibc), so extraction stays flat.

Forward passes over batches of different widths allocate tensors of many sizes.  glibc raises
its mmap threshold as large blocks are freed, then serves later blocks from the heap, where
freed pages of odd sizes stay resident: without a trim, the resident peak of text extraction
wandered with the number and order of batches (measured on minilm-l6: 160 to 270 MB above the
model for the same 128-token texts).  ``malloc_trim(0)`` returns those pages; it costs well
under a millisecond per call, against tens of milliseconds per forward pass.

:class:`PeakRSS` measures the other side: the peak growth of resident memory inside a block
(``rank``'s memory column).
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading


def _load_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl or another libc: nothing to do
        return None


_TRIM = _load_trim()


def release_free_memory() -> None:
    """Return free heap pages to the system; a no-op where the C library has no malloc_trim."""
    if _TRIM is not None:
        _TRIM(0)


class PeakRSS:
    """Peak growth of this process's resident memory inside a ``with`` block, sampled every 5 ms.

    Sampling (rather than resetting the kernel's high-water mark) leaves process-wide state alone,
    so a caller measuring its own peak is not disturbed.  ``peak_mb`` is ``None`` off Linux.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss() or 0)

    def __enter__(self) -> "PeakRSS":
        self._base = self._rss()
        self._peak = self._base or 0
        if self._base is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._base is None:
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss() or 0)
        self.peak_mb = round((self._peak - self._base) / 2**20, 1)
