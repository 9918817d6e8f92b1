"""The run report: one self-contained HTML file, rendered from Jinja2 templates.

Everything is inline (CSS in a ``<style>`` element, plots as base64 PNG ``data:`` URIs) and
the page references nothing outside itself: no scripts, web fonts or CDN, so it opens the
same offline, from an e-mail attachment or years later.  The markup lives in
``report/templates/`` (shipped as package data); this module turns a run's metrics into the
plain values those templates print.  The environment escapes every printed value
(autoescaping on), so class names, file names and messages from data are shown, never run,
and a template expression inside them (``{{ 7*7 }}``) stays text: data is only ever a value,
never a template.
"""
from __future__ import annotations

import base64
import functools
import os
import re
from pathlib import Path
from typing import Any

from ..scores import score_title
from . import formatting, plots, task_views
from .continual import continual_view

__all__ = ["render_report", "write_report", "template_env", "summary_view"]

VERDICTS = {  # verdict -> (headline, CSS class)
    "helped": ("Transfer helped", "helped"),
    "no-difference": ("No clear difference", "no-difference"),
    "hurt": ("Transfer hurt (negative transfer)", "hurt"),
}
MAX_FLAT = 30  # a bigger nested dict (a label map of many classes) is folded, not flattened
MAX_ROWS = 1000  # skipped / validation tables; beyond this the page gets unwieldy
_HASH = re.compile(r"^(?:[a-z0-9]+:)?[0-9a-f]{32,}$")


@functools.lru_cache(maxsize=1)
def template_env():
    """The Jinja2 environment of every report page: package templates, autoescaping on,
    undefined names an error (a typo in a template fails the tests, not silently blanks a cell)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("transferkit.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=formatting.pct, points=formatting.points, duration=formatting.duration,
                       interval=formatting.interval, score=formatting.fmt_score,
                       b64=lambda png: base64.b64encode(png).decode("ascii"))
    return env


def _metrics(cm: dict) -> dict[str, Any]:
    """The summary-table figures of one model (``None`` where absent)."""
    keys = ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "ece_ci", "log_loss")
    return {k: cm.get(k) for k in keys}


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts to dotted keys; big dicts and lists stay whole (see :func:`_value`)."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and 0 < len(v) <= MAX_FLAT:
            out.extend(_flatten(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _value(v: Any) -> dict[str, Any]:
    """A key/value-table value for the ``value`` macro: long hashes shortened (``kind`` "hash",
    the full value in a tooltip), long collections folded (``kind`` "details"), floats to 6
    significant digits."""
    if isinstance(v, float):
        return {"kind": "text", "text": repr(v) if len(repr(v)) <= 10 else f"{v:.6g}"}
    if isinstance(v, (dict, list, tuple)):
        items = [f"{k}: {x}" for k, x in v.items()] if isinstance(v, dict) else [str(x) for x in v]
        kind = "text" if len(items) <= MAX_FLAT else "details"
        return {"kind": kind, "text": ", ".join(items), "count": len(items)}
    s = str(v)
    if _HASH.match(s):
        return {"kind": "hash", "text": s[: s.find(":") + 13], "full": s}
    return {"kind": "text", "text": s}


def _facts(m: dict, task_facts: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """The line under the title; ``task_facts`` (other tasks than classification) replace the class count."""
    run = m.get("run") or {}
    facts = [(k, run.get(k)) for k in ("created", "strategy", "backbone", "modality", "seed")]
    facts += [("train items", m.get("n_train")), ("test items", m.get("n_test"))]
    if task_facts is None:
        classes = m.get("classes") or (m.get("test") or {}).get("classes") or []
        facts.append(("classes", len(classes) or None))
    else:
        facts += task_facts
    return [(k, v) for k, v in facts if v is not None]


def _verdict(m: dict) -> dict[str, Any] | None:
    verdict = m.get("verdict")
    if verdict is None:
        return None
    headline, css = VERDICTS.get(verdict, (str(verdict), "no-difference"))
    gain, ci = m.get("transfer_gain"), m.get("transfer_gain_ci")
    # lead: the text before "the best control"; ci: after "<level> CI" (task_views words other tasks').
    return {"headline": headline, "css": css, "gain": gain,
            "lead": None if gain is None else f"{formatting.points(gain)} points of accuracy vs",
            "ci": f"{formatting.points(ci[0])} to {formatting.points(ci[1])}" if ci else None,
            "control": (m.get("control") or {}).get("name"), "explanation": m.get("verdict_explanation")}


def _models(m: dict, primary: str = "accuracy") -> list[tuple[str, dict, bool]]:
    """(display name, metrics, is best control) for the transfer model then each control;
    ``primary``: the verdict's metric, all that is known of a best control without metrics."""
    strategy = (m.get("run") or {}).get("strategy") or (m.get("strategy") or {}).get("name")
    best = (m.get("control") or {}).get("name")
    rows = [(f"transfer ({strategy})" if strategy else "transfer", m["test"], False)]
    controls = m.get("controls") or {}
    rows += [(name, cm or {}, name == best) for name, cm in controls.items()]
    if best and best not in controls and primary in m["control"]:
        rows.append((best, {primary: m["control"][primary]}, True))
    return rows


def _summary_note(models: list[tuple[str, dict, bool]], gains: dict, level: str) -> str:
    note = (f"Intervals in brackets: {level} bootstrap confidence intervals over test items. "
            "Accuracy and macro-F1: higher is better. ECE (expected calibration error, the gap "
            "between the model's confidence and its accuracy) and log loss: lower is better.")
    if any(cm.get("ece") is not None and cm.get("ece_ci") and cm["ece_ci"][0] > cm["ece"] for _, cm, _ in models):
        note += (" ECE is biased upwards by noise, more so on resampled data, so its interval can "
                 "lie above the estimate; read it as a plausible range for the miscalibration.")
    if gains:
        note += (" Transfer gain: the transfer model's accuracy minus this control's, in points, "
                 f"with a {level} paired-bootstrap interval.")
    return note


def _plots(m: dict, models: list[tuple[str, dict, bool]], classes: list[str], level: str) -> list[dict]:
    """The three figures: ``{"id", "alt", "png", "caption"}``."""
    test = m["test"]
    scored = [(n, cm) for n, cm, _ in models if cm.get("accuracy") is not None]
    what = ("of the transfer model (blue) and of each control trained without transfer (grey)"
            if len(scored) > 1 else "of the transfer model (no controls were trained)")
    out = [{"id": "plot-controls",
            "alt": "Test accuracy bars: " + ", ".join(f"{n} {formatting.pct(cm['accuracy'])}" for n, cm in scored),
            "png": plots.accuracy_bars([n for n, _ in scored], [cm["accuracy"] for _, cm in scored],
                                       [cm.get("accuracy_ci") for _, cm in scored]),
            "caption": f"Test accuracy {what}; error bars: {level} confidence intervals."}]
    if test.get("confusion_matrix"):
        counts = ", numbers are counts" if len(classes) <= plots.MAX_LABELLED_CLASSES else ""
        out.append({"id": "plot-confusion",
                    "alt": f"Confusion matrix of the transfer model over {len(classes)} classes",
                    "png": plots.confusion_heatmap(test["confusion_matrix"], classes),
                    "caption": "Confusion matrix of the transfer model: rows are true classes, columns "
                               f"predicted; colour is the share of the true class{counts}."})
    pc = [test.get("per_class", {}).get(c, {}) for c in classes]
    if any(pc):
        out.append({"id": "plot-per-class", "alt": "Per-class precision and recall bars of the transfer model",
                    "png": plots.per_class_bars(
                        classes, [p.get("precision", 0.0) for p in pc], [p.get("recall", 0.0) for p in pc],
                        [p.get("precision_ci") for p in pc], [p.get("recall_ci") for p in pc]),
                    "caption": "Precision and recall of the transfer model per class; error bars: "
                               f"{level} confidence intervals."})
    return out


def _per_class_rows(test: dict, classes: list[str]) -> list[dict]:
    rows = []
    for c in classes:
        p = test.get("per_class", {}).get(c)
        if p is not None:
            rows.append({"name": c, "support": p.get("support", ""), "f1": p.get("f1"),
                         **{k: p.get(k) for k in ("precision", "precision_ci", "recall", "recall_ci")}})
    return rows


def _class_counts(validation: dict | None) -> dict[str, Any] | None:
    """Items per class (per label for multi-label) of each split, from ``validation.json``'s
    ``counts`` (``{split: {"items", "classes": {name: n}}}``); ``None`` without classes (regression).

    Returns ``{"splits": [name], "rows": [{"name", "cells": [(n, share) | None]}], "ratio"}``,
    ``ratio`` the largest over the smallest training class (how imbalanced the data is).
    """
    counts = (validation or {}).get("counts") or {}
    splits = [k for k in ("train", "test") if isinstance(counts.get(k), dict) and counts[k].get("classes")]
    if not splits:
        return None
    names = sorted({str(c) for k in splits for c in counts[k]["classes"]})
    rows = []
    for c in names:
        cells = []
        for k in splits:
            n, total = counts[k]["classes"].get(c), counts[k].get("items") or 0
            cells.append(None if n is None else (int(n), n / total if total else None))
        rows.append({"name": c, "cells": cells})
    train = [int(n) for n in counts[splits[0]]["classes"].values() if n]
    ratio = max(train) / min(train) if train else None
    return {"splits": [f"{k} ({counts[k].get('items', '?')} items)" for k in splits], "rows": rows, "ratio": ratio}


def _list_rows(items: list, keys: list[str]) -> dict[str, Any] | None:
    """A capped table of dicts: cells ``{"text", "severity", "hint"}``; ``severity`` (the CSS
    class suffix, letters only) is set on the "severity" column, ``hint`` follows a "message"."""
    if not items:
        return None
    rows = []
    for it in items[:MAX_ROWS]:
        it = it if isinstance(it, dict) else {keys[0]: it}
        rows.append([{"text": it.get(k, ""),
                      "severity": re.sub(r"[^a-z]", "", str(it.get(k, "")).lower()) if k == "severity" else None,
                      "hint": it.get("hint") if k == "message" else None} for k in keys])
    return {"rows": rows, "total": len(items), "more": len(items) - MAX_ROWS}


def _domain(d: dict, metrics: dict) -> dict[str, Any] | None:
    """Domain distance to the unlabelled target; for domain adaptation, source-only vs adapted."""
    if not d:
        return None
    out: dict[str, Any] = {"adaptation": None, "shift": d.get("shift") or [], "selection": None}
    if "source_only" in d:
        so = d["source_only"]
        out["adaptation"] = {
            "explanation": d.get("adaptation_explanation", ""), "source_only": _metrics(so),
            "adapted": _metrics(metrics["test"]), "strategy": (metrics.get("run") or {}).get("strategy"),
            "gain": d["adaptation_gain"], "gain_ci": d.get("adaptation_gain_ci"),
            "per_class": _per_class_rows(so, list((so.get("per_class") or {}).keys())), "metric": None}
        key = d.get("adaptation_metric")
        if key:  # regression, multi-label: the task's primary metric in its own units, not percentages
            test = metrics.get("test") or {}
            out["adaptation"]["metric"] = {"name": key, "source_only": so.get(key),
                                           "source_only_ci": so.get(f"{key}_ci"),
                                           "adapted": test.get(key), "adapted_ci": test.get(f"{key}_ci")}
    sel = d.get("selection") or {}
    if sel.get("scores"):
        knob = sel.get("knob", "value")
        out["selection"] = {"knob": knob, "why": sel.get("why", sel.get("criterion")), "rows": [
            {"value": r.get(knob), "chosen": r.get(knob) == sel.get("chosen"), "score": r["score"],
             "source_loss": r.get("source_loss", float("nan")),
             "target_entropy": r.get("target_entropy", float("nan"))} for r in sel["scores"]]}
    elif sel.get("reason"):
        out["selection"] = {"knob": sel.get("knob") or "value", "reason": sel["reason"], "rows": []}
    return out


def _auto_adapt(d: dict) -> dict[str, Any] | None:
    """auto-adapt's candidates (metrics.json ``domain.auto_adapt``): criteria, choice, test accuracy."""
    a = d.get("auto_adapt")
    if not a:
        return None
    rows = [{**r, "best": r["label"] == a.get("best")} for r in a.get("candidates", [])]
    return {"criterion": a.get("criterion"), "choice": a.get("choice"), "why": a.get("why"), "refit": a.get("refit"),
            "explanation": a.get("explanation"), "rows": rows, "skipped": a.get("skipped") or [],
            "has_accuracy": any(r.get("test_accuracy") is not None for r in rows)}


def _explanations(items: list[dict]) -> list[dict]:
    """``transferkit explain``'s results; ``html`` is its own markup (every word escaped there)."""
    from markupsafe import Markup

    return [{"item": e.get("item"), "predicted": e.get("predicted"), "target": e.get("target"),
             "method": e.get("method"), "note": e.get("note"), "png": e.get("png"),
             "task": e.get("task") or "classification", "baseline_value": e.get("baseline_value"),
             "probability": None if e.get("probability") is None else 100 * float(e["probability"]),
             "html": Markup(e["html"]) if e.get("html") else None} for e in items]


def _auto(auto: dict | None) -> dict[str, Any] | None:
    if not auto:
        return None
    task = auto.get("task", "classification")
    knn_title = "5-NN accuracy" if task == "classification" else score_title("knn", task).replace("kNN", "5-NN")
    return {"reasons": list(auto.get("reasons", [])), "task": task, "knn_title": knn_title,
            "ranking": [{"candidate": r["candidate"], "knn": formatting.fmt_score("knn", r["scores"].get("knn"), task),
                         "logme": r["scores"].get("logme"), "seconds": r["seconds"]} for r in auto.get("ranking", [])]}


def render_report(metrics: dict, *, card: dict | None = None, skipped: list[dict] | None = None,
                  validation: dict | None = None, explanations: list[dict] | None = None) -> str:
    """Renders a run's report as one self-contained HTML page.

    Args:
        metrics: the run's ``metrics.json`` content; only ``"test"`` (the transfer model's
            metrics of the run's task: ``transferkit.tasks.get_task(task).metrics(...)``) is
            required, every other section is rendered when present.  ``"task"`` (absent: an
            older run, "classification") picks the page's metrics, verdict wording and plots;
            a regression run's ``test["predictions"] = {"y_true": [...], "y_pred": [...]}``
            gives its predicted-vs-true and residual plots.
        card: the model card; shown as a key/value lineage table.
        skipped: items left out by ``--skip-bad``, each ``{"origin", "reason"}``.
        validation: ``validation.json``: ``{"problems": [{"severity", "kind", "origin", "message"}, ...],
            "counts": {split: {"items", "classes": {name: n}}}}`` (the class distribution table).
        explanations: from ``transferkit explain``: each ``{"item", "predicted", "probability",
            "target", "method", "png"|"html", "note"}``.

    Returns:
        The HTML document, as a string.
    """
    notes = metrics.get("notes") or []
    timings = metrics.get("timings") or {}
    summary = summary_view(metrics)
    run_name = (metrics.get("run") or {}).get("name")
    context = {
        **summary,
        "title": f"transferkit report: {run_name}" if run_name else "transferkit report",
        "explanations": _explanations(explanations or []),
        "domain": _domain(metrics.get("domain") or {}, metrics),
        "auto_adapt": _auto_adapt(metrics.get("domain") or {}),
        "continual": continual_view(metrics),
        "auto": _auto(metrics.get("auto")),
        "notes": [notes] if isinstance(notes, str) else list(notes),
        "timings": [(k.removesuffix("_s").replace("_", " "), v) for k, v in timings.items()],
        "strategy": [(k, _value(v)) for k, v in _flatten(metrics.get("strategy") or {})],
        "card": [(k, _value(v)) for k, v in _flatten(card or {})],
        "skipped": _list_rows(skipped or [], ["origin", "reason"]),
        "problems": _list_rows((validation or {}).get("problems") or [], ["severity", "kind", "origin", "message"]),
        "class_counts": _class_counts(validation),
    }
    return template_env().get_template("report.html").render(context)


def summary_view(metrics: dict, *, plots: bool = True) -> dict[str, Any]:
    """The view model of a run's page top (``summary.html``): facts, verdict banner, delivered
    model, summary table and its note; with ``plots``, also the figures and the per-class /
    per-label tables the rest of the report shows.  ``report.html`` and the notebook view
    (:mod:`.notebook`, ``plots=False``: no figure is drawn) both render it.

    Raises:
        ValueError: ``metrics`` without a ``"test"`` section, or of a task this version cannot show.
    """
    if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
        raise ValueError("metrics must be a dict with a 'test' section (the transfer model's "
                         "classification_metrics output)")
    task = str(metrics.get("task") or "classification")
    if task not in task_views.TASKS:
        raise ValueError(f"metrics.json has task {task!r}; this transferkit reports {', '.join(task_views.TASKS)}")
    test = metrics["test"]
    level = f"{100 * float(test.get('confidence', 0.95)):g}%"
    gains = metrics.get("controls_gain") or {}
    context: dict[str, Any] = {"verdict": _verdict(metrics), "level": level, "gains": bool(gains),
                               "delivered": _delivered(metrics), "task": task}
    if task == "classification":
        classes = test.get("classes") or metrics.get("classes") or list(test.get("per_class", {}))
        classes = [str(c) for c in classes]
        models = _models(metrics)
        context.update(
            facts=_facts(metrics), columns=None, plots_note=None, per_label=[],
            models=[{"name": n, "best": best, "metrics": _metrics(cm), "gain": gains.get(n) if i else None}
                    for i, (n, cm, best) in enumerate(models)],
            summary_note=_summary_note(models, gains, level),
            plots=_plots(metrics, models, classes, level) if plots else [],
            per_class=_per_class_rows(test, classes))
    else:
        view = task_views.task_view(metrics, task, _models(metrics, task_views.primary_key(metrics, task)), level,
                                    plots=plots)
        if context["verdict"] is not None:
            context["verdict"].update(view.pop("verdict_line"))
        context.update(view, facts=_facts(metrics, view.pop("facts")), per_class=[])
    return context


def _delivered(m: dict) -> dict[str, Any] | None:
    """The delivered model's view: chosen candidate, its test metrics and comparison with the
    best control, and every candidate's score on the training data (``None``: an older run)."""
    from .text import headline

    d = m.get("delivered")
    if not isinstance(d, dict) or "chosen_by" not in d:
        return None
    candidates = d.get("candidates") or []
    is_transfer = not candidates or any(c.get("chosen") and c.get("transfer") for c in candidates)
    v = m.get("delivered_vs_controls")
    return {"is_transfer": is_transfer, "name": d.get("name"), "chosen_by": d["chosen_by"],
            "metric": d.get("metric") or "score", "test": headline(d["test"]) if "test" in d else "",
            "transfer": headline(m["test"]),
            "versus": {"control": v["control"], "verdict": v["verdict"], "gain": f"{v['gain']:+.3f}",
                       "ci": f"[{v['gain_ci'][0]:+.3f}, {v['gain_ci'][1]:+.3f}]"} if v else None,
            "candidates": [{"name": c["name"], "transfer": c.get("transfer"), "chosen": c.get("chosen"),
                            "score": "—" if c.get("score") is None else f"{c['score']:.4f}"}
                           for c in candidates] if len(candidates) > 1 else []}


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
