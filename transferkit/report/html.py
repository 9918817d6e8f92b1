"""The run report: one self-contained HTML file.

Everything is inline (CSS in a ``<style>`` element, plots as base64 PNG ``data:`` URIs) and
the page references nothing outside itself: no scripts, web fonts or CDN, so it opens the
same offline, from an e-mail attachment or years later.  Every string that comes from data
(class names, file names, messages) goes through :func:`html.escape`.
"""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any, Iterable

from . import plots

__all__ = ["render_report", "write_report"]

VERDICTS = {  # verdict -> (headline, CSS class)
    "helped": ("Transfer helped", "helped"),
    "no-difference": ("No clear difference", "no-difference"),
    "hurt": ("Transfer hurt (negative transfer)", "hurt"),
}
MAX_FLAT = 30  # a bigger nested dict (a label map of many classes) is folded, not flattened
MAX_ROWS = 1000  # skipped / validation tables; beyond this the page gets unwieldy
_HASH = re.compile(r"^(?:[a-z0-9]+:)?[0-9a-f]{32,}$")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2328;max-width:1040px;margin:2rem auto;padding:0 1.2rem;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}
h2{font-size:1.15rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
.meta,.small,figcaption{color:#57606a;font-size:.88rem}
.verdict{border:1px solid #d0d7de;border-left-width:8px;border-radius:6px;padding:1rem 1.3rem;
 margin:1.4rem 0}
.verdict .big{font-size:2.1rem;font-weight:700;line-height:1.15}
.verdict .gain{font-size:1.05rem;margin-top:.3rem;color:#1f2328}
.verdict p{margin:.6rem 0 0;color:#1f2328}
.helped{color:#1a7f37;border-left-color:#1a7f37}
.no-difference{color:#57606a;border-left-color:#8c959f}
.hurt{color:#cf222e;border-left-color:#cf222e}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e5e8eb;text-align:left;vertical-align:top;
 overflow-wrap:anywhere}
th{background:#f6f8fa} tr:nth-child(even) td{background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#6e7781;font-size:.85em}
.badge{font-size:.75em;background:#eaeef2;border-radius:1em;padding:.05rem .5rem;margin-left:.4rem}
figure{margin:1rem 0} figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
.sev-error{color:#cf222e;font-weight:600} .sev-warning{color:#9a6700}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _ci(ci: list | None) -> str:
    if not ci or len(ci) != 2 or None in ci:
        return ""
    return f' <span class="ci">[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]</span>'


def _points(x: float) -> str:
    r = round(100 * x, 1)
    return "+0.0" if r == 0 else f"{r:+.1f}"


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], num: set[int] = frozenset()) -> str:
    """A table; headers are plain text, cells are HTML already escaped by the caller."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, id_: str, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img id="{id_}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts to dotted keys; big dicts and lists stay whole (see :func:`_value`)."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and 0 < len(v) <= MAX_FLAT:
            out.extend(_flatten(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _value(v: Any) -> str:
    """A key/value-table value: long hashes shortened (full value in a tooltip), long
    collections folded in a <details> element, floats to 6 significant digits."""
    if isinstance(v, float):
        return repr(v) if len(repr(v)) <= 10 else f"{v:.6g}"
    if isinstance(v, (dict, list, tuple)):
        items = [f"{k}: {x}" for k, x in v.items()] if isinstance(v, dict) else [str(x) for x in v]
        if len(items) <= MAX_FLAT:
            return _e(", ".join(items))
        return f"<details><summary>{len(items)} entries</summary>{_e(', '.join(items))}</details>"
    s = str(v)
    if _HASH.match(s):
        return f'<code title="{_e(s)}">{_e(s[: s.find(":") + 13])}…</code>'
    return _e(s)


def _header(m: dict) -> str:
    run = m.get("run") or {}
    title = f"transferkit report: {run['name']}" if run.get("name") else "transferkit report"
    facts = [(k, run.get(k)) for k in ("created", "strategy", "backbone", "modality", "seed")]
    classes = m.get("classes") or (m.get("test") or {}).get("classes") or []
    facts += [("train items", m.get("n_train")), ("test items", m.get("n_test")),
              ("classes", len(classes) or None)]
    meta = " · ".join(f"{_e(k)}: <b>{_e(v)}</b>" for k, v in facts if v is not None)
    return f"<h1>{_e(title)}</h1><div class=\"meta\">{meta}</div>"


def _verdict(m: dict, level: str) -> str:
    verdict = m.get("verdict")
    if verdict is None:
        return ('<section class="verdict no-difference"><div class="big">No verdict</div>'
                "<p>This run trained no controls (models without transfer), so there is nothing to "
                "compare the transfer model with. Run with controls to learn whether transfer "
                "helped.</p></section>")
    headline, cls = VERDICTS.get(verdict, (str(verdict), "no-difference"))
    parts = [f'<section class="verdict {cls}"><div class="big" id="verdict">{_e(headline)}</div>']
    gain, ci, control = m.get("transfer_gain"), m.get("transfer_gain_ci"), m.get("control") or {}
    if gain is not None:
        vs = f", <b>{_e(control['name'])}</b>" if control.get("name") else ""
        ci_text = f" ({level} CI {_points(ci[0])} to {_points(ci[1])})" if ci else ""
        parts.append(f'<div class="gain">{_points(gain)} points of accuracy vs the best '
                     f"control{vs}{ci_text}</div>")
    if m.get("verdict_explanation"):
        parts.append(f"<p>{_e(m['verdict_explanation'])}</p>")
    return "".join(parts) + "</section>"


def _models(m: dict) -> list[tuple[str, dict, bool]]:
    """(display name, metrics, is best control) for the transfer model then each control."""
    strategy = (m.get("run") or {}).get("strategy") or (m.get("strategy") or {}).get("name")
    best = (m.get("control") or {}).get("name")
    rows = [(f"transfer ({strategy})" if strategy else "transfer", m["test"], False)]
    controls = m.get("controls") or {}
    rows += [(name, cm or {}, name == best) for name, cm in controls.items()]
    if best and best not in controls and "accuracy" in m["control"]:
        rows.append((best, {"accuracy": m["control"]["accuracy"]}, True))
    return rows


def _summary(models: list[tuple[str, dict, bool]], gains: dict, level: str) -> str:
    """The metrics table; ``gains`` is ``transfer_verdict(...)["controls"]`` (may be empty)."""
    rows, ece_above = [], False
    for i, (name, cm, best) in enumerate(models):
        badge = '<span class="badge">best control</span>' if best else ""
        ece, ece_ci = cm.get("ece"), cm.get("ece_ci")
        ece_above |= bool(ece is not None and ece_ci and ece_ci[0] > ece)
        loss = cm.get("log_loss")
        rows.append([
            _e(name) + badge,
            _pct(cm.get("accuracy")) + _ci(cm.get("accuracy_ci")),
            _pct(cm.get("macro_f1")) + _ci(cm.get("macro_f1_ci")),
            _pct(ece) + _ci(ece_ci),
            "—" if loss is None else f"{loss:.3f}",
        ])
        if gains:
            g = gains.get(name) if i else None
            ci = (g or {}).get("gain_ci")
            rows[-1].append("" if not g else f"{_points(g['gain'])}" + (
                f' <span class="ci">[{_points(ci[0])}, {_points(ci[1])}]</span>' if ci else ""))
    note = (f"Intervals in brackets: {level} bootstrap confidence intervals over test items. "
            "Accuracy and macro-F1: higher is better. ECE (expected calibration error, the gap "
            "between the model's confidence and its accuracy) and log loss: lower is better.")
    if ece_above:
        note += (" ECE is biased upwards by noise, more so on resampled data, so its interval can "
                 "lie above the estimate; read it as a plausible range for the miscalibration.")
    if gains:
        note += (" Transfer gain: the transfer model's accuracy minus this control's, in points, "
                 f"with a {level} paired-bootstrap interval.")
    headers = ["Model", "Accuracy", "Macro-F1", "ECE", "Log loss"]
    headers += ["Transfer gain"] if gains else []
    return _table(headers, rows, {1, 2, 3, 4, 5}) + f'<p class="small">{note}</p>'


def _plots(m: dict, models: list[tuple[str, dict, bool]], classes: list[str], level: str) -> str:
    test = m["test"]
    scored = [(n, cm) for n, cm, _ in models if cm.get("accuracy") is not None]
    png = plots.accuracy_bars([n for n, _ in scored], [cm["accuracy"] for _, cm in scored],
                              [cm.get("accuracy_ci") for _, cm in scored])
    alt = "Test accuracy bars: " + ", ".join(f"{n} {_pct(cm['accuracy'])}" for n, cm in scored)
    what = ("of the transfer model (blue) and of each control trained without transfer (grey)"
            if len(scored) > 1 else "of the transfer model (no controls were trained)")
    out = [_img(png, "plot-controls", alt,
                f"Test accuracy {what}; error bars: {level} confidence intervals.")]
    if test.get("confusion_matrix"):
        png = plots.confusion_heatmap(test["confusion_matrix"], classes)
        counts = ", numbers are counts" if len(classes) <= plots.MAX_LABELLED_CLASSES else ""
        out.append(_img(png, "plot-confusion",
                        f"Confusion matrix of the transfer model over {len(classes)} classes",
                        "Confusion matrix of the transfer model: rows are true classes, columns "
                        f"predicted; colour is the share of the true class{counts}."))
    pc = [test.get("per_class", {}).get(c, {}) for c in classes]
    if any(pc):
        png = plots.per_class_bars(
            classes, [p.get("precision", 0.0) for p in pc], [p.get("recall", 0.0) for p in pc],
            [p.get("precision_ci") for p in pc], [p.get("recall_ci") for p in pc])
        out.append(_img(png, "plot-per-class", "Per-class precision and recall bars of the transfer "
                        "model", f"Precision and recall of the transfer model per class; error bars: "
                        f"{level} confidence intervals."))
    return "".join(out)


def _per_class(test: dict, classes: list[str]) -> str:
    rows = []
    for c in classes:
        p = test.get("per_class", {}).get(c)
        if p is None:
            continue
        f1 = p.get("f1")
        rows.append([_e(c), _e(p.get("support", "")),
                     _pct(p.get("precision")) + _ci(p.get("precision_ci")),
                     _pct(p.get("recall")) + _ci(p.get("recall_ci")),
                     "—" if f1 is None else f"{f1:.3f}"])
    if not rows:
        return ""
    return _table(["Class", "Support", "Precision", "Recall", "F1"], rows, {1, 2, 3, 4})


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:04.1f} s"


def _list_table(items: list[dict], keys: list[str], headers: list[str]) -> str:
    """A capped table of dicts; "severity" is coloured by its value, a "hint" follows "message"."""
    rows = []
    for it in items[:MAX_ROWS]:
        it = it if isinstance(it, dict) else {keys[0]: it}
        cells = []
        for k in keys:
            v = _e(it.get(k, ""))
            sev = re.sub(r"[^a-z]", "", str(it.get(k, "")).lower())
            if k == "severity":
                v = f'<span class="sev-{sev}">{v}</span>'
            elif k == "message" and it.get("hint"):
                v += f'<br><span class="small">hint: {_e(it["hint"])}</span>'
            cells.append(v)
        rows.append(cells)
    more = len(items) - MAX_ROWS
    tail = f'<p class="small">… and {more} more, not shown.</p>' if more > 0 else ""
    return _table(headers, rows) + tail


def _domain(d: dict, metrics: dict) -> list[str]:
    """Domain distance to the unlabelled target; for domain adaptation, source-only vs adapted."""
    if not d:
        return []
    body = ['<h2 id="domain">Domain shift and adaptation</h2>']
    if "source_only" in d:
        so, ad = d["source_only"], metrics["test"]
        ci = d.get("adaptation_gain_ci")
        rows = [["source-only (same model, adaptation off)", _pct(so.get("accuracy")) + _ci(so.get("accuracy_ci")),
                 _pct(so.get("macro_f1")) + _ci(so.get("macro_f1_ci")), ""],
                [f"adapted ({_e((metrics.get('run') or {}).get('strategy'))})",
                 _pct(ad.get("accuracy")) + _ci(ad.get("accuracy_ci")),
                 _pct(ad.get("macro_f1")) + _ci(ad.get("macro_f1_ci")),
                 _points(d["adaptation_gain"]) + (f' <span class="ci">[{_points(ci[0])}, {_points(ci[1])}]</span>'
                                                  if ci else "")]]
        body += [f"<p><b>{_e(d.get('adaptation_explanation', ''))}</b> The test set is labelled target data "
                 "when one was given (its labels are used for evaluation only).</p>",
                 _table(["Model", "Accuracy", "Macro-F1", "Gain over source-only"], rows, {1, 2, 3})]
        per_class = _per_class(so, list((so.get("per_class") or {}).keys()))
        if per_class:
            body += ["<p>Per class, source-only:</p>", per_class]
    shift = d.get("shift") or []
    if shift:
        rows = [[_e(r["features"]), f"{r['mmd2']:.4f}", f"{r['mmd_p_value']:.3g}", f"{r['a_distance']:.2f}",
                 _e(r["reading"])] for r in shift]
        body += ["<p>Distance between the training data and the unlabelled target, in each model's own "
                 "feature space (MMD with a Gaussian kernel, median bandwidth, permutation p-value; proxy "
                 "A-distance from a linear domain classifier, 0 = indistinguishable, 2 = fully separable).</p>",
                 _table(["Features", "MMD²", "p-value", "A-distance", "Reading"], rows, {1, 2, 3})]
    sel = d.get("selection") or {}
    if sel.get("scores"):
        knob = sel.get("knob", "value")
        rows = [[_e(r.get(knob)) + (" <b>(chosen)</b>" if r.get(knob) == sel.get("chosen") else ""),
                 f"{r['score']:.4f}", f"{r.get('source_loss', float('nan')):.4f}",
                 f"{r.get('target_entropy', float('nan')):.3f}"] for r in sel["scores"]]
        body += [f"<p>{_e(knob)} was chosen without target labels by {_e(sel.get('why', sel.get('criterion')))}.</p>",
                 _table([knob, "Criterion", "Source validation loss", "Target prediction entropy"], rows, {1, 2, 3})]
    elif sel.get("reason"):
        body += [f"<p>{_e(sel.get('knob') or 'value')}: {_e(sel['reason'])}.</p>"]
    return body


def _explanations(items: list[dict]) -> list[str]:
    if not items:
        return []
    body = ['<h2 id="explanations">Explanations</h2>',
            '<p class="small">From <code>transferkit explain</code>. Images: where the evidence for the class lies '
            "(Grad-CAM on the last convolutional feature map, or integrated gradients on the pixels; red = "
            "more). Text: integrated gradients per word (red pushes toward the class, blue away).</p>"]
    for i, e in enumerate(items):
        caption = (f"{_e(e.get('item'))}: predicted <b>{_e(e.get('predicted'))}</b> "
                   f"({100 * float(e.get('probability', 0)):.1f}%); explained class {_e(e.get('target'))}, "
                   f"{_e(e.get('method'))}" + (f"; {_e(e['note'])}" if e.get("note") else ""))
        if e.get("png"):
            body.append(_img(e["png"], f"explanation-{i}", f"heat map for {e.get('item')}", caption))
        elif e.get("html"):
            body.append(f'<div class="explanation" id="explanation-{i}"><p class="small">{caption}</p>{e["html"]}</div>')
    return body


def _details(metrics: dict, test: dict, classes: list[str], card: dict | None,
             skipped: list | None, validation: dict | None) -> list[str]:
    """The sections below the plots, each present only when its data is."""
    body: list[str] = []
    per_class = _per_class(test, classes)
    if per_class:
        body += ["<h2>Per class (transfer model)</h2>", per_class]
    body += _domain(metrics.get("domain") or {}, metrics)
    auto = metrics.get("auto")
    if auto:
        rows = [[_e(r["candidate"]) + (" <b>(chosen)</b>" if i == 0 else ""), _pct(r["scores"].get("knn")),
                 _e(f"{r['scores'].get('logme'):.4f}" if r["scores"].get("logme") is not None else "—"),
                 _duration(r["seconds"])]
                for i, r in enumerate(auto.get("ranking", []))]
        body += ['<h2 id="auto">How the model and strategy were chosen</h2>',
                 "<p>Ranked on the training split only (the test set played no part), best first: by the "
                 "leave-one-out 5-NN accuracy, ties broken by LogME; "
                 "the full ranking is in <code>rank/rank.html</code>.</p>",
                 _table(["Candidate", "5-NN accuracy (leave-one-out)", "LogME", "Time"], rows, {1, 2, 3}),
                 "<ul>", *(f"<li>{_e(r)}</li>" for r in auto.get("reasons", [])), "</ul>"]
    notes = metrics.get("notes") or []
    if notes:
        notes = [notes] if isinstance(notes, str) else notes
        body += ["<h2>Notes</h2><ul>", *(f"<li>{_e(n)}</li>" for n in notes), "</ul>"]
    if metrics.get("timings"):
        rows = [[_e(k.removesuffix("_s").replace("_", " ")),
                 _duration(v) if isinstance(v, (int, float)) else _e(v)]
                for k, v in metrics["timings"].items()]
        body += ["<h2>Timings</h2>", _table(["Step", "Time"], rows, {1})]
    strategy = metrics.get("strategy") or {}
    if strategy:
        rows = [[f"<code>{_e(k)}</code>", _value(v)] for k, v in _flatten(strategy)]
        body += ["<h2>Strategy</h2>", _table(["Setting", "Value"], rows)]
    if card:
        rows = [[f"<code>{_e(k)}</code>", _value(v)] for k, v in _flatten(card)]
        body += ["<h2>Lineage (model card)</h2>", _table(["Field", "Value"], rows)]
    if skipped:
        body += [f"<h2>Skipped items ({len(skipped)})</h2>",
                 '<p class="small">Left out of training and evaluation by --skip-bad.</p>',
                 _list_table(skipped, ["origin", "reason"], ["Item", "Reason"])]
    problems = (validation or {}).get("problems") or []
    if problems:
        body += [f"<h2>Validation warnings ({len(problems)})</h2>",
                 _list_table(problems, ["severity", "kind", "origin", "message"],
                             ["Severity", "Kind", "Item", "Message"])]
    return body


def render_report(metrics: dict, *, card: dict | None = None, skipped: list[dict] | None = None,
                  validation: dict | None = None, explanations: list[dict] | None = None) -> str:
    """Renders a run's report as one self-contained HTML page.

    Args:
        metrics: the run's ``metrics.json`` content; only ``"test"`` (the transfer model's
            :func:`transferkit.evaluation.classification_metrics` output) is required, every
            other section is rendered when present.
        card: the model card; shown as a key/value lineage table.
        skipped: items left out by ``--skip-bad``, each ``{"origin", "reason"}``.
        validation: ``{"problems": [{"severity", "kind", "origin", "message"}, ...]}``.
        explanations: from ``transferkit explain``: each ``{"item", "predicted", "probability",
            "target", "method", "png"|"html", "note"}``.

    Returns:
        The HTML document, as a string.
    """
    if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
        raise ValueError("metrics must be a dict with a 'test' section (the transfer model's "
                         "classification_metrics output)")
    test = metrics["test"]
    classes = test.get("classes") or metrics.get("classes") or list(test.get("per_class", {}))
    classes = [str(c) for c in classes]
    level = f"{100 * float(test.get('confidence', 0.95)):g}%"
    models = _models(metrics)
    run_name = (metrics.get("run") or {}).get("name")
    body = [_header(metrics), _verdict(metrics, level),
            "<h2>Summary</h2>", _summary(models, metrics.get("controls_gain") or {}, level),
            "<h2>Plots</h2>", _plots(metrics, models, classes, level)]
    body += _explanations(explanations or [])
    body += _details(metrics, test, classes, card, skipped, validation)
    title = f"transferkit report: {run_name}" if run_name else "transferkit report"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body)
            + '\n<p class="small" style="margin-top:3rem">Generated by transferkit.</p></body></html>\n')


def write_report(path: str | os.PathLike, metrics: dict, **kw: Any) -> Path:
    """Renders the report (see :func:`render_report`; ``kw`` is passed on) and writes it.

    The file is written next to its final name and then renamed, so a reader never sees a
    half-written report.  Parent directories are created.

    Returns:
        The path written.
    """
    path = Path(path)
    text = render_report(metrics, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
