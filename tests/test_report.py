"""Tests of transferkit.report: a self-contained, escaped HTML report with three PNG plots."""
from __future__ import annotations

import base64
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.evaluation import classification_metrics, transfer_verdict
from transferkit.report import plots, render_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img id="(plot-[a-z-]+)" alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
PLOT_IDS = {"plot-controls", "plot-confusion", "plot-per-class"}


def _proba(y, c, skill, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), c))
    logits[np.arange(len(y)), y] += skill
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def make_metrics(classes=("ham", "spam"), full=True, n=300):
    """A metrics.json-shaped dict built with the real evaluation functions."""
    c = len(classes)
    y = np.random.default_rng(0).integers(0, c, n)
    p = _proba(y, c, 2.5, 1)
    m = {
        "run": {"name": "spam", "created": "2026-11-22T08:00:00Z", "strategy": "linear-probe",
                "backbone": "minilm-l6", "modality": "text", "seed": 0},
        "n_train": 4 * n, "n_test": n, "classes": list(classes),
        "test": classification_metrics(y, p, list(classes), n_boot=200),
    }
    if full:
        ctl = {"random-init": _proba(y, c, 0.5, 2), "tfidf-logreg": _proba(y, c, 3.0, 3)}
        m["controls"] = {k: classification_metrics(y, v, list(classes), n_boot=200)
                         for k, v in ctl.items()}
        v = transfer_verdict(y, p.argmax(1), {k: v.argmax(1) for k, v in ctl.items()}, n_boot=200)
        m.update(control=v["control"], controls_gain=v["controls"], transfer_gain=v["transfer_gain"],
                 transfer_gain_ci=v["transfer_gain_ci"], verdict=v["verdict"],
                 verdict_explanation=v["explanation"])
        m["timings"] = {"validate_s": 0.4, "extract_s": 12.0, "fit_s": 3.1, "controls_s": 8.0,
                        "total_s": 95.0}
        m["strategy"] = {"name": "linear-probe", "params": {"C": 1.0}}
        m["notes"] = ["212 of 6046 texts were longer than 256 tokens and were embedded in chunks."]
    return m


CARD = {
    "backbone": {"name": "minilm-l6", "weights_sha256": "ab" * 32},
    "label_map": {"ham": 0, "spam": 1},
    "data_hash": "cd" * 32,
    "versions": {"transferkit": "0.1.0", "numpy": "2.4.6"},
}
SKIPPED = [{"origin": "digits/3/x.png", "reason": "truncated file"}]
VALIDATION = {"problems": [{"severity": "warning", "kind": "duplicate", "origin": "emails.jsonl:4",
                            "message": "same text as emails.jsonl:2"}]}


def check_images(page: str) -> None:
    found = {m.group(1): m for m in IMG.finditer(page)}
    assert set(found) == PLOT_IDS
    for match in found.values():
        png = base64.b64decode(match.group(3), validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 300 and im.height >= 150


def check_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    for banned in ("<script", "<link", "@import", "url(", "<iframe"):
        assert banned not in page.lower()


def test_full_report():
    page = render_report(make_metrics(), card=CARD, skipped=SKIPPED, validation=VALIDATION)
    assert page.startswith("<!DOCTYPE html>")
    check_images(page)
    check_self_contained(page)
    m = make_metrics()
    assert f'class="verdict {m["verdict"]}"' in page
    for text in ("random-init", "tfidf-logreg", "best control", "Macro-F1", "ECE", "Per class",
                 "Notes", "Timings", "1 min 35.0 s", "Lineage", "digits/3/x.png", "truncated file",
                 "Validation warnings", "same text as emails.jsonl:2", "transfer (linear-probe)"):
        assert text in page, text
    gain = m["controls_gain"]["random-init"]["gain"]
    assert "Transfer gain" in page and f"{100 * gain:+.1f}" in page
    # Long hashes are shortened, the full value kept in a tooltip.
    assert f'title="{"ab" * 32}"' in page and f'>{"ab" * 6}…<' in page


@pytest.mark.parametrize("verdict,colour_class", [
    ("helped", "helped"), ("no-difference", "no-difference"), ("hurt", "hurt"),
    ("something-else", "no-difference"),
])
def test_verdict_headline_colours(verdict, colour_class):
    m = make_metrics()
    m["verdict"] = verdict
    assert f'<section class="verdict {colour_class}">' in render_report(m)


def test_minimal_report():
    m = make_metrics(full=False)
    page = render_report(m)
    check_images(page)
    check_self_contained(page)
    assert "No verdict" in page
    for absent in ("random-init", "Timings", "Lineage", "Skipped", "Validation warnings", "Notes"):
        assert absent not in page
    # Even sparser: no run info, no CIs.
    test = {k: v for k, v in m["test"].items() if not k.endswith("_ci")}
    page = render_report({"test": test})
    check_images(page)


def test_requires_test_metrics():
    with pytest.raises(ValueError, match="test"):
        render_report({"run": {"name": "x"}})


def test_user_strings_are_escaped():
    evil = "<script>alert(1)</script>"
    m = make_metrics(classes=("ham", evil, "a & b"))
    m["run"]["name"] = '"><img src=x onerror=alert(2)>'
    m["notes"].append("<b>bold</b>")
    card = {"label_map": {evil: 1}, "backbone": {"name": "<i>x</i>"}}
    skipped = [{"origin": "<img src=y onerror=alert(3)>.png", "reason": "<u>bad</u>"}]
    validation = {"problems": [{"severity": "<x>", "kind": "k", "origin": "o", "message": evil}]}
    page = render_report(m, card=card, skipped=skipped, validation=validation)
    assert "<script" not in page and "<img src=x" not in page and "<img src=y" not in page
    for raw in ("<b>bold", "<u>bad", "<i>x", "<x>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    check_images(page)


def test_awkward_class_names_plot_without_warnings():
    # "$" would start matplotlib mathtext; CJK glyphs are missing from the default font.
    classes = ("$5", "a$b$c", "日本語", "x" * 120, "tab\tand\nnewline")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(render_report(make_metrics(classes=classes)))


def test_many_classes():
    classes = tuple(f"class-{i}" for i in range(30))
    page = render_report(make_metrics(classes=classes, n=900))
    check_images(page)
    assert "class-29" in page


def test_plots_return_png_and_leave_no_figures():
    import matplotlib
    import matplotlib.pyplot as plt

    before, backend = plt.get_fignums(), dict.__getitem__(matplotlib.rcParams, "backend")
    pngs = [
        plots.accuracy_bars(["transfer", "ctl"], [0.9, 0.8], [[0.88, 0.92], None]),
        plots.confusion_heatmap([[5, 1], [0, 4]], ["a", "b"]),
        # A CI that misses its point estimate (possible with percentile bootstraps) is fine.
        plots.per_class_bars(["a", "b"], [0.5, 1.0], [0.2, 0.0], [[0.6, 0.7], None], None),
    ]
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    assert plt.get_fignums() == before
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend


def test_long_tables_are_capped():
    skipped = [{"origin": f"f{i}.png", "reason": "truncated"} for i in range(1200)]
    page = render_report(make_metrics(full=False), skipped=skipped)
    assert "Skipped items (1200)" in page and "200 more, not shown" in page
    assert "f999.png" in page and "f1000.png" not in page


def test_write_report(tmp_path):
    m = make_metrics()
    out = write_report(tmp_path / "run" / "report.html", m, card=CARD)
    assert out == tmp_path / "run" / "report.html" and out.is_file()
    assert out.read_text(encoding="utf-8") == render_report(m, card=CARD)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp file left


def test_matplotlib_is_imported_lazily():
    import subprocess
    import sys

    # Exit code 2: the package itself already pulls matplotlib in (then nothing to check here).
    code = ("import sys, transferkit\n"
            "if 'matplotlib' in sys.modules: sys.exit(2)\n"
            "import transferkit.report, transferkit.evaluation\n"
            "sys.exit(3 if 'matplotlib' in sys.modules else 0)")
    root = Path(__file__).parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(root), capture_output=True, text=True)
    if proc.returncode == 2:
        pytest.skip("`import transferkit` already imports matplotlib")
    assert proc.returncode == 0, proc.stderr or "matplotlib was imported by transferkit.report"


def test_template_syntax_in_data_is_printed_not_evaluated():
    # Data is only ever a value given to the templates, never template source: Jinja2 syntax in a
    # class name, a file name or a note comes out literally (escaped), not evaluated or run.
    tricky = ("<script>alert(1)</script>", "{{ 7*7 }}", '{{ "EVAL" ~ "CLASS" }}', "{% if true %}x{% endif %}")
    m = make_metrics(classes=tricky)
    m["run"]["name"] = '{{ "EVAL" ~ "RUN" }}'
    m["notes"].append("{{ ''.__class__ }}")
    page = render_report(m, skipped=[{"origin": '{{ "EVAL" ~ "FILE" }}/<script>x.png', "reason": "{{ 7*7 }}"}],
                         validation={"problems": [{"severity": "warning", "kind": "k", "origin": "{{ 7*7 }}.png",
                                                   "message": "<script>", "hint": '{{ "EVAL" ~ "HINT" }}'}]})
    for literal in ("{{ 7*7 }}", "{{ &#34;EVAL&#34; ~ &#34;CLASS&#34; }}", "{% if true %}x{% endif %}",
                    "transferkit report: {{ &#34;EVAL&#34; ~ &#34;RUN&#34; }}", "{{ &#39;&#39;.__class__ }}",
                    "{{ &#34;EVAL&#34; ~ &#34;FILE&#34; }}/&lt;script&gt;x.png", "{{ 7*7 }}.png",
                    "hint: {{ &#34;EVAL&#34; ~ &#34;HINT&#34; }}"):
        assert literal in page, literal
    for evaluated in ("EVALCLASS", "EVALRUN", "EVALFILE", "EVALHINT", "&lt;class", "<class"):
        assert evaluated not in page, evaluated
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    check_images(page)
    check_self_contained(page)


def test_explanation_markup_is_kept_and_its_fields_escaped():
    # explain's word-level HTML is built (and escaped word by word) by transferkit itself: it is
    # kept as markup; every other field of an explanation is data and is escaped.
    span = '<span style="background:rgba(220,50,50,0.40)" title="+0.1234">free&amp;</span>'
    page = render_report(make_metrics(), explanations=[
        {"item": "<img src=z>.txt", "predicted": "{{ 7*7 }}", "probability": 0.93, "target": "spam",
         "method": "integrated gradients", "html": span, "note": "<b>n</b>"}])
    assert '<div class="explanation" id="explanation-0">' in page and span in page
    assert "&lt;img src=z&gt;.txt" in page and "<b>{{ 7*7 }}</b> (93.0%)" in page and "&lt;b&gt;n&lt;/b&gt;" in page


def test_templates_are_package_files_and_cover_every_page():
    from importlib import resources

    folder = resources.files("transferkit.report").joinpath("templates")
    names = {p.name for p in folder.iterdir()}
    assert {"report.html", "rank.html", "macros.html", "report.css"} <= names
    # shipped with the package (pyproject's package-data), so an installed copy renders too
    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert '"report/templates/*"' in text and '"studies.json"' in text


def test_report_package_does_not_import_ranking():
    # report/ sits below ranking in the layers (docs/architecture.md): it reads a RankResult by
    # its attributes and may name the type only for type checkers.
    import ast

    folder = Path(__file__).resolve().parents[1] / "transferkit" / "report"
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and id(node) not in guarded:
                assert "ranking" not in (node.module or ""), f"{path.name}:{node.lineno} imports ranking"
