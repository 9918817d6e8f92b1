"""A real run's report.html in a real browser (headless Chromium): the plots are *visible*.

Two Chromium runs: ``--dump-dom`` of a copy with a measuring script (image decode state,
natural size, layout box, computed visibility), then ``--screenshot`` of the report itself; the
pixels inside each plot's box must be the plot (compared with its embedded PNG), not blank.
``make test`` installs Chromium (Debian ``chromium chromium-driver``) where it is missing.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import transferkit as tk

from conftest import toy_texts

PLOTS = ("plot-controls", "plot-confusion", "plot-per-class")
WIDTH = 1200
MEASURE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => {
    const r = i.getBoundingClientRect(), s = getComputedStyle(i);
    return {id: i.id, complete: i.complete, nw: i.naturalWidth, nh: i.naturalHeight,
            x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
            visibility: s.visibility, display: s.display, opacity: s.opacity};
  });
  const p = document.createElement('pre');
  p.id = 'tk-measure';
  p.textContent = JSON.stringify({dpr: devicePixelRatio, height: document.documentElement.scrollHeight, imgs});
  document.body.appendChild(p);
});
</script>"""


def find_chromium() -> str | None:
    for name in (os.environ.get("TRANSFERKIT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def chromium(binary: str, profile, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh profile, no network chatter, no GPU."""
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           f"--user-data-dir={profile}", "--force-device-scale-factor=1", "--hide-scrollbars",
           "--disable-extensions", "--no-first-run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tiny_text_dir, tmp_path_factory):
    """report.html of a real fit (tiny random BERT, both controls, verdict)."""
    texts, labels = toy_texts(20)
    out = tmp_path_factory.mktemp("browser") / "run"
    tk.fit(train=tk.Dataset(modality="text", inputs=texts, labels=labels), model=str(tiny_text_dir), out=str(out),
           log=None)
    return out / "report.html"


def test_report_plots_are_visible_in_chromium(report, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (chromium, chromium-browser, google-chrome or $TRANSFERKIT_CHROMIUM): "
                    "`make test` installs it with apt (Debian packages chromium chromium-driver)")
    html = report.read_text(encoding="utf-8")
    pngs = {m.group(1): base64.b64decode(m.group(2))
            for m in re.finditer(r'<img id="(plot-[a-z-]+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)}
    assert set(PLOTS) <= set(pngs)

    probe = tmp_path / "measure.html"
    probe.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    r = chromium(binary, tmp_path / "profile-1", f"--window-size={WIDTH},2000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="tk-measure">(.*?)</pre>', r.stdout, re.S)
    assert m, f"Chromium gave no measurement (exit {r.returncode}): {r.stderr[-2000:]}"
    layout = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert layout["dpr"] == 1
    boxes = {i["id"]: i for i in layout["imgs"]}

    shot = tmp_path / "shot.png"
    height = int(layout["height"]) + 50
    r = chromium(binary, tmp_path / "profile-2", f"--window-size={WIDTH},{height}", f"--screenshot={shot}",
                 report.as_uri())
    assert shot.is_file(), f"no screenshot (exit {r.returncode}): {r.stderr[-2000:]}"
    page = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)

    for pid in PLOTS:
        b = boxes[pid]
        src = Image.open(io.BytesIO(pngs[pid])).convert("RGB")
        assert b["complete"] and (b["nw"], b["nh"]) == src.size, b  # decoded, at its own size
        assert b["visibility"] == "visible" and b["display"] != "none" and float(b["opacity"]) == 1.0, b
        assert b["w"] >= 0.9 * b["nw"] and b["h"] >= 0.9 * b["nh"] and b["x"] >= 0, b  # not squashed or off-page
        # the box's pixels in the screenshot (inside the 1px border)
        x0, y0 = int(round(b["x"])) + 1, int(round(b["y"])) + 1
        w, h = int(b["w"]) - 2, int(b["h"]) - 2
        assert y0 + h <= page.shape[0] and x0 + w <= page.shape[1], (b, page.shape)
        region = page[y0:y0 + h, x0:x0 + w]
        assert region.std() > 20, f"{pid}: blank region on screen (std {region.std():.1f})"
        assert (region.min(axis=2) < 200).mean() > 0.03, f"{pid}: almost nothing drawn on screen"
        want = np.asarray(src.resize((w, h))).astype(np.float64)
        diff = np.abs(region - want).mean()
        assert diff < 12, f"{pid}: what is on screen differs from the plot (mean abs diff {diff:.1f} of 255)"
