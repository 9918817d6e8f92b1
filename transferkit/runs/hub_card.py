"""A run's ``README.md``: its model card in the Hugging Face Hub's format.

YAML front matter (``library_name: transferkit``, tags, ``base_model``, the data as content
hashes, ``pipeline_tag``, and the test metrics with their 95% bootstrap intervals as a
``model-index``, written by ``huggingface_hub``'s own ``ModelCardData``), then the verdict and
the controls in prose.  ``model_card.json`` stays the run's own card (lineage, hashes, what
``tk.load`` reads); this file only describes it, so a run folder can be uploaded as it is
(:func:`transferkit.runs.hub.push`).
"""
from __future__ import annotations

from typing import Any

from ..backbones import BACKBONES
from ..report.text import headline
from ..tasks import get_task

README = "README.md"

#: The Hub's pipeline tag for each (modality, task); regression of images or audio has none.
PIPELINE_TAGS = {("text", "classification"): "text-classification", ("text", "multi-label"): "text-classification",
                 ("text", "regression"): "text-classification",  # the Hub's tag for text regression heads too
                 ("image", "classification"): "image-classification",
                 ("image", "multi-label"): "image-classification",
                 ("audio", "classification"): "audio-classification",
                 ("audio", "multi-label"): "audio-classification"}

#: The metrics of each task written into the model-index, primary first.
INDEX_METRICS = {"classification": ("accuracy", "macro_f1"), "regression": ("rmse", "mae", "r2"),
                 "multi-label": ("micro_f1", "macro_f1")}


def base_model(card: dict[str, Any]) -> str | None:
    """The Hub id the backbone came from: a zoo entry's source (``sentence-transformers/...``),
    or the model name when it is a hub id; ``None`` for a local folder or a model with no Hub id."""
    name = str((card.get("backbone") or {}).get("name") or "")
    if name in BACKBONES:
        source = str(BACKBONES.entry(name).meta.get("source") or "").split(" ")[0]
        return source if source.count("/") == 1 else None
    looks_like_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    return name if looks_like_id else None


def front_matter(card: dict[str, Any], metrics: dict[str, Any], name: str) -> str:
    """The YAML metadata block (without the ``---`` fences)."""
    from huggingface_hub import EvalResult, ModelCardData

    task, modality = card.get("task") or "classification", card.get("modality")
    data = card.get("data") or {}
    tag = PIPELINE_TAGS.get((modality, task))
    test = metrics.get("test") or {}
    results = []
    for key in INDEX_METRICS.get(task, ()):
        if test.get(key) is None:
            continue
        lo, hi = test.get(f"{key}_ci") or (None, None)
        interval = f" (95% bootstrap interval {lo:.3f}-{hi:.3f})" if lo is not None else ""
        results.append(EvalResult(
            task_type=tag or task, task_name=task, dataset_type=f"sha256:{data.get('test_hash')}",
            dataset_name=f"test set, {data.get('n_test')} items", dataset_split="test", metric_type=key,
            metric_value=round(float(test[key]), 4), metric_name=f"test {key}{interval}",
            metric_args=({"ci_low": round(float(lo), 4), "ci_high": round(float(hi), 4), "confidence": 0.95,
                          "method": "percentile bootstrap over test items"} if lo is not None else None),
            verified=False))
    verdict = metrics.get("verdict")
    meta = ModelCardData(
        library_name="transferkit", model_name=name, pipeline_tag=tag, base_model=base_model(card),
        datasets=[f"sha256:{h}" for h in (data.get("train_hash"), data.get("target_hash")) if h],
        tags=["transferkit", "transfer-learning", str(modality), task, str(card.get("strategy", {}).get("name"))]
        + ([f"verdict-{verdict}"] if verdict else []),
        eval_results=results or None)
    return meta.to_yaml()


def hub_readme(card: dict[str, Any], metrics: dict[str, Any], name: str | None = None) -> str:
    """The whole ``README.md`` of a run: front matter, then the verdict, the controls, the
    delivered model, the data and how to load it, in prose."""
    name = name or (metrics.get("run") or {}).get("name") or "transferkit-run"
    task = get_task(card.get("task") or "classification")
    b = card.get("backbone") or {}
    strategy = (card.get("strategy") or {}).get("name")
    data = card.get("data") or {}
    lines = [f"# {name}", "",
             f"A {task.name} model ({card.get('modality')}) made by transferkit: "
             f"the strategy `{strategy}` on the pre-trained backbone `{b.get('name')}` (weights sha256 "
             f"`{str((b.get('identity') or {}).get('weights_sha256'))[:16]}…`), fitted on {data.get('n_train')} "
             f"labelled items and tested on {data.get('n_test')} held-out ones.", ""]
    lines += ["## Did transfer help?", ""]
    verdict = metrics.get("verdict")
    if verdict:
        lo, hi = metrics["transfer_gain_ci"]
        lines += [f"**Verdict: {verdict.upper()}.** {metrics.get('verdict_explanation', '')}", "",
                  f"Gain over the best control ({metrics['control']['name']}) in {task.primary_label}: "
                  f"{metrics['transfer_gain']:+.3f} (95% paired bootstrap interval {lo:+.3f} to {hi:+.3f}).", ""]
    else:
        lines += ["No controls were run for this model (control=False), so there is no verdict on whether "
                  "transfer helped.", ""]
    lines += ["## The model and its controls", "",
              "Each control learns the same task on the same split without the pre-trained weights: the same "
              "architecture randomly initialised (`random-init`) and the modality's classical baseline.", "",
              "| model | test metrics (95% bootstrap intervals) |", "|---|---|",
              f"| transfer: `{strategy}` on `{b.get('name')}` | {headline(metrics['test'])} |"]
    lines += [f"| control: `{c}` | {headline(m)} |" for c, m in (metrics.get("controls") or {}).items()]
    d = metrics.get("delivered") or {}
    if card.get("delivered") and "test" in d:  # selection delivered another model than the transfer model
        lines += [f"| delivered: `{d['name']}` | {headline(d['test'])} |", "",
                  f"The model `tk.load` and `transferkit predict` use is `{d['name']}`, chosen on the training "
                  f"data alone by {d.get('chosen_by')}; the verdict above judges the transfer model."]
    lines += ["", "## Data", "",
              f"- training items: {data.get('n_train')}, sha256 `{data.get('train_hash')}`",
              f"- test items: {data.get('n_test')}, sha256 `{data.get('test_hash')}`"]
    if data.get("target_hash"):
        lines.append(f"- unlabelled target items: {data.get('n_target')}, sha256 `{data['target_hash']}`")
    classes = card.get("classes") or []
    if classes:
        lines.append(f"- {'labels' if task.name == 'multi-label' else 'classes'}: "
                     + ", ".join(f"`{c}`" for c in classes[:50]) + (" …" if len(classes) > 50 else ""))
    notes = metrics.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Use", "", "```python", "import transferkit as tk", "",
              'model = tk.load("hf://OWNER/NAME")  # or the folder itself: tk.load("path/to/run")',
              "model.predict([...])", "```", "",
              "`model_card.json` holds the lineage (backbone weight hash, data hashes, versions) and the hashes "
              "`tk.load` checks; `report.html` is the full report.", ""]
    return f"---\n{front_matter(card, metrics, name)}\n---\n\n" + "\n".join(lines)
