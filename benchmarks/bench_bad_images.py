"""Bad images in a real image folder, through the command line.

A folder of real MNIST-5k digits (``--per-class`` per digit, RGB PNGs in one folder per class) with
bad files mixed in (corrupt, truncated PNG and JPEG, zero-byte, two decompression bombs, a text
file and random bytes with image extensions) and valid images in odd modes (grayscale, palette,
CMYK, RGBA, 16-bit), which must be converted, not rejected.  Then

  (a) ``python -m transferkit.cli fit --data DIR --model efficientnet-lite0 --image-size 64 --out R``:
      exit code 2, every bad file reported, no traceback;
  (b) the same with ``--skip-bad``: exit code 0, the run finishes, and ``skipped.json`` lists
      exactly the bad files, with reasons.

Run: ``python benchmarks/bench_bad_images.py [--per-class 30]``
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int) -> bytes:
    """A valid 1-bit grey PNG of side x side black pixels: tiny on disk, huge once decoded."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def jpeg_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", quality=95)
    return b.getvalue()


def build_folder(root: Path, per_class: int) -> tuple[dict[str, str], dict[str, str], int]:
    """Returns ({relative path: what is wrong} for bad files, {relative path: mode} for odd-mode files,
    number of ordinary images)."""
    images, labels = C.load_mnist()
    rng = np.random.default_rng(0)
    n_ok = 0
    spare: dict[int, list[int]] = {}
    for d in range(10):
        (root / str(d)).mkdir(parents=True)
        idx = np.flatnonzero(labels == d)
        pick = rng.permutation(idx)
        for k, i in enumerate(pick[:per_class]):
            Image.fromarray(images[i], "L").convert("RGB").save(root / str(d) / f"{d}_{k:03d}.png")
            n_ok += 1
        spare[d] = list(pick[per_class:per_class + 10])

    def digit(d: int, j: int = 0) -> Image.Image:
        return Image.fromarray(images[spare[d][j]], "L").convert("RGB")

    bad: dict[str, str] = {}

    def put(rel: str, data: bytes, why: str) -> None:
        (root / rel).write_bytes(data)
        bad[rel] = why

    good = png_bytes(digit(0))
    corrupt = bytearray(good)
    mid = good.index(b"IDAT") + 12
    for k in range(mid, min(mid + 40, len(good) - 16)):
        corrupt[k] ^= 0x5A  # flip bits inside the compressed pixel data (the CRC no longer matches)
    put("0/corrupt_idat.png", bytes(corrupt), "corrupt: IDAT bytes flipped")
    big = digit(1).resize((280, 280), Image.BICUBIC)
    put("1/truncated.png", png_bytes(big)[: len(png_bytes(big)) // 2], "truncated PNG (first half)")
    put("2/truncated.jpg", jpeg_bytes(big)[: len(jpeg_bytes(big)) // 2], "truncated JPEG (first half)")
    put("3/empty.png", b"", "zero bytes")
    put("4/bomb_20000x20000.png", bomb_png(20000), "decompression bomb: 400 Mpx (over 2x Pillow's limit)")
    put("5/bomb_10000x10000.png", bomb_png(10000), "decompression bomb: 100 Mpx (over Pillow's limit)")
    put("6/notes.png", b"These are my notes, not an image.\nDigits dataset v2\n", "non-image: text with .png name")
    put("7/random.jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "non-image: random bytes as .jpg")

    odd: dict[str, str] = {}
    for d, mode in ((0, "L"), (1, "P"), (2, "CMYK"), (3, "RGBA"), (4, "LA"), (5, "I;16"), (8, "1"),
                    (9, "L"), (6, "P"), (7, "RGBA")):
        im = digit(d, 1 + len(odd) % 5)
        if mode == "RGBA":
            im = im.convert("RGBA")
            a = np.asarray(im).copy()
            a[:4, :, 3] = 0  # some transparent pixels
            im = Image.fromarray(a)
            name, data = f"{d}/odd_rgba.png", png_bytes(im)
        elif mode == "CMYK":
            name, data = f"{d}/odd_cmyk.jpg", jpeg_bytes(im.convert("CMYK"))
        elif mode == "I;16":
            a = (np.asarray(im.convert("L"), dtype=np.uint16) * 257)
            name, data = f"{d}/odd_16bit.png", png_bytes(Image.fromarray(a))
        elif mode == "P":
            name, data = f"{d}/odd_palette.png", png_bytes(im.convert("P", palette=Image.ADAPTIVE, colors=16))
        elif mode == "1":
            name, data = f"{d}/odd_1bit.png", png_bytes(im.convert("1"))
        else:
            name, data = f"{d}/odd_{mode.lower()}.png", png_bytes(im.convert(mode))
        (root / name).write_bytes(data)
        odd[name] = Image.open(io.BytesIO(data)).mode
    return bad, odd, n_ok


def run_cli(args: list[str], env: dict) -> tuple[int, str, float]:
    """Exit code, stdout and stderr interleaved as a terminal shows them, seconds."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "transferkit.cli", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, env=env, cwd=C.REPO)
    return p.returncode, p.stdout, time.perf_counter() - t


def abbreviate(text: str, head: int = 40, tail: int = 12) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) <= head + tail:
        return "\n".join(lines)
    return "\n".join(lines[:head] + [f"... ({len(lines) - head - tail} lines left out) ..."] + lines[-tail:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--no-write", action="store_true")
    a = C.parse_args(ap)
    load = C.OtherLoad()
    m = C.machine()
    C.say(C.machine_line(m))
    work = Path(tempfile.mkdtemp(prefix="tk-bench-bad-"))
    root = work / "digits"
    bad, odd, n_ok = build_folder(root, a.per_class)
    C.say(f"folder {root}: {n_ok} ordinary digit PNGs, {len(bad)} bad files, {len(odd)} valid odd-mode images")
    env = dict(os.environ)
    base = ["fit", "--data", str(root), "--model", "efficientnet-lite0", "--image-size", "64"]

    rc_a, text_a, t_a = run_cli(base + ["--out", str(work / "run_a")], env)
    reported = {rel: (Path(rel).name in text_a) for rel in bad}
    errors_part = text_a.split("Errors:", 1)[-1].split("Warnings:", 1)[0] if "Errors:" in text_a else ""
    check_a = {"exit code 2": rc_a == 2, "every bad file named": all(reported.values()),
               "no odd-mode image among the errors": not any(Path(rel).name in errors_part for rel in odd),
               "no Traceback": "Traceback" not in text_a, "nothing written": not (work / "run_a").exists()}
    C.say(f"(a) exit {rc_a} in {t_a:.1f} s; checks {check_a}")
    C.say(text_a)

    rc_b, text_b, t_b = run_cli(base + ["--out", str(work / "run_b"), "--skip-bad"], env)
    skipped_path = work / "run_b" / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else []
    prefix = root.name + "/"
    skipped_rel = {s["origin"][len(prefix):] if s["origin"].startswith(prefix) else s["origin"]: s for s in skipped}
    metrics_path = work / "run_b" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    n_used = metrics.get("n_train", 0) + metrics.get("n_test", 0)
    check_b = {"exit code 0": rc_b == 0, "skipped.json == the bad files": set(skipped_rel) == set(bad),
               "every skip has a reason": all(s.get("reason") for s in skipped),
               "odd-mode images kept": not (set(skipped_rel) & set(odd)),
               f"items used = {n_ok} + {len(odd)} odd-mode": n_used == n_ok + len(odd),
               "no Traceback": "Traceback" not in text_b}
    C.say(f"(b) exit {rc_b} in {t_b:.1f} s; checks {check_b}")
    C.say(text_b)
    m["cpu_other_during_pct"] = load.pct()
    ok = all(check_a.values()) and all(check_b.values())
    exact = "exactly the bad files" if check_b["skipped.json == the bad files"] else "MISMATCH"
    res = {"machine": m, "bad": bad, "odd": odd, "n_ok": n_ok, "a": {"rc": rc_a, "output": text_a,
           "seconds": t_a, "checks": check_a, "reported": reported},
           "b": {"rc": rc_b, "output": text_b, "seconds": t_b, "checks": check_b, "skipped": skipped,
                 "accuracy": metrics.get("test", {}).get("accuracy"), "verdict": metrics.get("verdict")},
           "summary": [{"item": f"bad images through the CLI ({len(bad)} bad files among {n_ok + len(odd)} good ones)",
                        "goal": "no --skip-bad: exit 2, all reported, no traceback; --skip-bad: exit 0, "
                                "skipped.json = exactly the bad files",
                        "measured": f"exit {rc_a} ({sum(reported.values())}/{len(bad)} named, "
                                    f"{'no' if 'Traceback' not in text_a else 'a'} traceback); exit {rc_b}, "
                                    f"skipped.json {len(skipped)} entries, {exact}",
                        "met": ok, "anchor": "bad-images"}]}
    tick = lambda d: "; ".join(f"{k}: {'yes' if v else '**NO**'}" for k, v in d.items())  # noqa: E731
    bad_rows = [[f"`{rel}`", why, f"{skipped_rel[rel]['kind']}" if rel in skipped_rel else "**not skipped**",
                 "yes" if reported[rel] else "**no**"] for rel, why in bad.items()]
    odd_rows = ", ".join(f"`{rel}` ({mode})" for rel, mode in odd.items())
    body = f"""<a id="bad-images"></a>
## Bad images through the command line (`benchmarks/bench_bad_images.py`)

{C.machine_line(m)}

A folder of {n_ok} real MNIST-5k digits ({a.per_class} per class, RGB PNGs in class folders `0/` ... `9/`) plus
{len(bad)} bad files and {len(odd)} valid images in odd modes: {odd_rows}.

{C.md_table(['bad file', 'what it is', 'kind in skipped.json (b)', 'named in the report (a)'], bad_rows)}

**(a)** `python -m transferkit.cli fit --data digits --model efficientnet-lite0 --image-size 64 --out run_a`:
exit code **{rc_a}** after {t_a:.1f} s. Checks: {tick(check_a)}.

```
$ transferkit fit --data digits --model efficientnet-lite0 --image-size 64 --out run_a   # stdout and stderr
{abbreviate(text_a.replace(str(work) + '/', ''))}
```

**(b)** the same with `--skip-bad`: exit code **{rc_b}** after {t_b:.1f} s; test accuracy
{metrics.get('test', {}).get('accuracy', float('nan')):.3f}, verdict {metrics.get('verdict')}. Checks: {tick(check_b)}.

```
$ transferkit fit --data digits --model efficientnet-lite0 --image-size 64 --out run_b --skip-bad   # stdout and stderr
{abbreviate(text_b.replace(str(work) + '/', ''), head=30, tail=14)}
```

`run_b/skipped.json`:

```json
{json.dumps(skipped, indent=1, ensure_ascii=False)[:6000]}
```
"""
    if not a.no_write:
        C.save_result("bad_images", res)
        C.update_section("bad_images", body)
    C.say(body)


if __name__ == "__main__":
    main()
