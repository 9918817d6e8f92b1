"""Notebook views (``_repr_html_``): a fitted model shows the report's verdict banner and summary table, a
ranking its table; user strings (class names, run and candidate names) are escaped; progress bars come
from ``tqdm.auto``, which picks the notebook widget under Jupyter."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import transferkit as tk
from transferkit.data import Dataset
from transferkit.ranking import rank
from transferkit.report.notebook import ROOT, scoped_css

from conftest import toy_texts, write_toy_mail

EVIL = "<script>alert(1)</script>"  # a class name that must stay text
TEMPLATE = "{{ 7*7 }}"  # Jinja2 syntax in data: printed, never evaluated


@pytest.fixture(scope="module")
def fitted(tiny_text_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    data = write_toy_mail(tmp / "toy.csv", 15)
    # the run's name (a user string shown in the view) carries markup
    return tk.fit(data=str(data), text_columns="body", model=str(tiny_text_dir), out=str(tmp / "run<b>"),
                  log=None, progress=False)


def test_a_fitted_model_shows_its_verdict_and_summary_table(fitted):
    page = fitted._repr_html_()
    m = fitted.metrics
    assert page.startswith(f'<div class="{ROOT}">') and page.rstrip().endswith("</div>")
    # the verdict banner, as the report words it, and the summary table: the transfer model, then each control
    headline = {"helped": "Transfer helped", "no-difference": "No clear difference",
                "hurt": "Transfer hurt (negative transfer)"}[m["verdict"]]
    assert f'<section class="verdict {m["verdict"]}"><div class="big" id="verdict">{headline}</div>' in page
    assert "<th>Model</th><th>Accuracy</th><th>Macro-F1</th>" in page
    names = [re.sub(r"<span.*", "", r) for r in re.findall(r"<tr><td>(.*?)</td>", page.split("<h2>Summary</h2>")[1])]
    assert names == ["transfer (linear-probe)", *m["controls"]]
    assert f"{100 * m['test']['accuracy']:.1f}%" in page
    # the run's name is text; the run's report is named; no figure is drawn
    assert "transferkit model: run&lt;b&gt;</h1>" in page and "run<b>" not in page
    assert str(fitted.run_dir / "report.html").replace("<", "&lt;").replace(">", "&gt;") in page
    assert "<img" not in page
    # the scoped stylesheet restyles nothing outside the view
    css = page.split("<style>")[1].split("</style>")[0]
    assert all(rule.startswith(f".{ROOT}") for rule in css.strip().splitlines())


def test_user_strings_in_the_view_are_escaped_and_never_evaluated(fitted):
    # a backbone and strategy named with markup and with template syntax, in a run without a name
    metrics = {**fitted.metrics, "run": {**fitted.metrics["run"], "name": None, "backbone": EVIL,
                                         "strategy": TEMPLATE}}
    page = tk.TransferModel(fitted.backbone, fitted.strategy, metrics=metrics)._repr_html_()
    assert EVIL not in page and "backbone: <b>&lt;script&gt;alert(1)&lt;/script&gt;</b>" in page
    assert f"<tr><td>transfer ({TEMPLATE})</td>" in page  # printed as it is: never a template
    assert f"transferkit model: {fitted.strategy.name} on" in page


def test_a_multi_task_model_shows_a_section_per_column(fitted):
    from transferkit.multitask import MultiTaskModel

    page = MultiTaskModel(models={"topic": fitted, "<i>stars</i>": fitted})._repr_html_()
    assert page.count('<div class="big" id="verdict">') == 2 and page.count("<h2>Summary</h2>") == 2
    assert "<h1>label column topic (classification)</h1>" in page
    assert "<h1>label column &lt;i&gt;stars&lt;/i&gt; (classification)</h1>" in page
    assert page.count("<style>") == 1


def test_a_model_without_metrics_falls_back_to_its_repr(fitted):
    assert tk.TransferModel(fitted.backbone, fitted.strategy)._repr_html_() is None


def test_a_loaded_run_shows_the_same_view(fitted):
    loaded = tk.load(fitted.run_dir)
    assert loaded._repr_html_() == fitted._repr_html_()


def test_a_ranking_shows_its_table(tiny_text_dir):
    texts, labels = toy_texts(10)
    result = rank(Dataset(modality="text", inputs=texts, labels=labels, source=f"{EVIL}.csv"),
                  [str(tiny_text_dir), f"random:{tiny_text_dir}"], log=None, progress=False)
    page = result._repr_html_()
    assert page.startswith(f'<div class="{ROOT}">') and "<h1>transferkit rank</h1>" in page
    assert f'<section class="verdict helped"><div class="big">{result.best.candidate}</div>' in page
    table = page.split("<h2>Ranking</h2>")[1]
    assert [re.sub("<[^>]+>", "", c) for c in re.findall(r"<tr><td>1</td><td>(.*?)</td>", table)] == [
        result.rows[0].candidate]
    assert table.count("<tr><td>") == len(result.rows) == 2
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in page
    assert "<img" not in page  # the chart is the rank.html page's


def test_the_scoped_stylesheet_is_the_reports():
    css = str(scoped_css())
    report_css = (Path(tk.__file__).parent / "report" / "templates" / "report.css").read_text()
    assert css.count("{") == report_css.count("{") + 2  # every rule of report.css, and the view's own margin
    assert f".{ROOT}{{font-family:system-ui" in css and f".{ROOT} .verdict .big{{" in css


def test_progress_bars_come_from_tqdm_auto():
    # tqdm.auto gives the notebook widget under Jupyter (with ipywidgets) and the terminal bar elsewhere:
    # a bar imported from tqdm or tqdm.std directly would print text lines into a notebook
    package = Path(tk.__file__).parent
    imports = set()
    for f in package.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tqdm":
                imports.add(node.module)
            elif isinstance(node, ast.Import):
                imports |= {a.name for a in node.names if a.name.split(".")[0] == "tqdm"}
    assert imports == {"tqdm.auto"}


# Run in a fresh interpreter: it makes tqdm.auto believe it runs under a Jupyter kernel (tqdm looks for
# ipykernel's shell), which it decides once, at its import.
_IN_A_KERNEL = """
import sys, types
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
import IPython
class ZMQInteractiveShell:
    pass
IPython.get_ipython = lambda: ZMQInteractiveShell()
import tqdm.notebook
bars = []
init = tqdm.notebook.tqdm.__init__
def spy(self, *args, **kwargs):
    init(self, *args, **kwargs)
    bars.append((kwargs.get("desc"), self.disable))
tqdm.notebook.tqdm.__init__ = spy
import numpy as np
import torch
from transferkit.backbones.zoo import EfficientNetLiteBackbone
from transferkit.data import from_arrays
from transferkit.features import extract_features
from transferkit.training import train
images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
extract_features(EfficientNetLiteBackbone("efficientnet-lite0", init="random:0", image_size=32),
                 from_arrays(images, ["a", "b", "a", "b"]), cache=False)
model, x = torch.nn.Linear(2, 1), torch.randn(8, 2)
train(model, lambda idx: model(x[idx]).pow(2).mean(), 8, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=4)
print(repr(bars))
"""


def test_progress_bars_are_notebook_widgets_under_a_kernel():
    # with ipywidgets, tqdm.auto gives the widget bar, and the default progress=None shows it (tqdm's
    # text bar would be off there: a kernel's output stream is not a terminal)
    pytest.importorskip("ipywidgets", reason="the notebook widget needs pip install 'transferkit[notebook]'")
    proc = subprocess.run([sys.executable, "-c", _IN_A_KERNEL], capture_output=True, text=True,
                          cwd=str(Path(__file__).parent.parent), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    bars = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert bars == [("features efficientnet-lite0 (image, last layer, random:0)", False), ("train", False)]
