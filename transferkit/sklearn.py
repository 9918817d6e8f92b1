"""scikit-learn estimators over transferkit: ``TransferClassifier`` and ``TransferRegressor``.

>>> from transferkit.sklearn import TransferClassifier
>>> from sklearn.model_selection import GridSearchCV
>>> search = GridSearchCV(TransferClassifier(model="minilm-l6"),
...                       {"params": [{"Cs": [0.1]}, {"Cs": [10.0]}]}, cv=3).fit(texts, labels)

``X`` is a list (or 1-D array, or pandas Series) of texts, of image or audio file paths, or a
uint8 image batch ``(N, H, W[, C])`` (or a list of ``(H, W[, C])`` arrays); the modality is
inferred (strings are texts unless every one is an existing image or audio file) or given.
``fit`` validates the data as ``transferkit fit`` does, loads the backbone and fits the strategy
on every item given (scikit-learn owns the splits: no test split, no controls, nothing written);
with ``out=DIR`` it runs the whole pipeline instead (split, controls, verdict, run directory) and
wraps the model that pipeline delivers, which ``tk.load(DIR)`` gives back.

Features come from the on-disk feature cache, keyed by the backbone's identity and each item's
content hash: clones that ``GridSearchCV`` or ``cross_val_score`` fit on the same items compute
no feature twice, and a clone whose items are all cached never loads the backbone's weights.

scikit-learn's ``check_estimator`` assumes numeric 2-D arrays, which these estimators refuse
(a row of numbers is neither a text nor an image), so they declare ``two_d_array=False`` and
``string=True`` in their tags.  ``tests/test_sklearn.py`` runs the checks that apply to them
directly, by name (:data:`API_CHECKS`), and the full ``check_estimator`` battery on a pipeline
that turns numeric rows into small grey images in front of each estimator.  The exceptions:

- on the bare estimators, every check that feeds numeric rows (``check_fit2d_*``,
  ``check_classifiers_train``, ``check_n_features_in``...): they run through the pipeline instead;
- on the pipeline, ``check_estimators_overwrite_params`` and ``check_dont_overwrite_parameters``,
  which scikit-learn's own ``Pipeline`` fails with any steps (it fits them in place, so its
  ``steps`` parameter changes) (:data:`PIPELINE_CHECK_EXCEPTIONS`);
- ``check_classifier_data_not_an_array`` / ``check_regressor_data_not_an_array`` and
  ``check_array_api_input`` skip themselves where pandas or ``SCIPY_ARRAY_API`` is absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from .backbones import get_backbone
from .config import DEFAULT_MODELS, FitConfig
from .data import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, Dataset, from_arrays, prepare_data
from .errors import UserInputError
from .evidence import new_model
from .model import TransferModel
from .pipeline import fit as pipeline_fit
from .strategies import STRATEGIES

#: scikit-learn checks that hold for these estimators as they are (texts or images as input):
#: run one by one in tests/test_sklearn.py.
API_CHECKS = ("check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
              "check_estimator_repr", "check_no_attributes_set_in_init", "check_mixin_order",
              "check_do_not_raise_errors_in_init_or_set_params", "check_parameters_default_constructible",
              "check_get_params_invariance", "check_set_params", "check_estimators_unfitted")

#: Checks of the full ``check_estimator`` battery (on the numeric-rows-to-images pipeline) that
#: cannot hold, and why.
PIPELINE_CHECK_EXCEPTIONS = {
    "check_estimators_overwrite_params": "scikit-learn's Pipeline fits its steps in place, so its `steps` parameter "
                                         "holds the fitted estimators afterwards (Pipeline(StandardScaler(), "
                                         "LogisticRegression()) fails this check too)",
    "check_dont_overwrite_parameters": "the same: fitting a Pipeline changes its public `steps`",
}


class _TransferEstimator(BaseEstimator):
    """What the classifier and the regressor share (see the module docstring).

    Args:
        model: backbone: zoo name, local transformers directory or hub id (``None``: the
            modality's default, ``minilm-l6`` for text, ``efficientnet-lite0`` for images).
        strategy: registry name of the strategy (``transferkit strategies``).
        params: the strategy's options (``{"Cs": [0.1, 1.0]}``); ``None``: its defaults.
        modality: ``text``, ``image`` or ``audio``; ``None`` infers it from ``X``.
        image_size: an image backbone's input side (smaller is faster).
        layer: which backbone layer's features (a number or ``last``).
        backbone_options: further backbone options (``pooling``, ``max_length``, ``max_chunks``...).
        sampling_rate: audio given as arrays: their rate in Hz.
        seed: seeds the strategy's fit (and the pipeline's split with ``out``).
        batch_size: items per forward pass.
        cache: read and fill the on-disk feature cache.
        out: a run directory: fit through the whole pipeline (split, controls, verdict) and write
            the run there; ``None`` writes nothing.  Every clone that ``GridSearchCV`` fits
            rewrites the same folder, so leave it out there and set it on the final estimator.

    Attributes (after ``fit``):
        model_: the fitted :class:`~transferkit.model.TransferModel`.
        modality_: the modality of the training items.
        run_dir_: where the run was written (``None`` without ``out``).
    """

    _task = "classification"

    def __init__(self, model: str | None = None, strategy: str = "linear-probe", params: dict | None = None, *,
                 modality: str | None = None, image_size: int | None = None, layer: int | str | None = None,
                 backbone_options: dict | None = None, sampling_rate: int | None = None, seed: int = 0,
                 batch_size: int = 32, cache: bool = True, out: str | Path | None = None):
        self.model = model
        self.strategy = strategy
        self.params = params
        self.modality = modality
        self.image_size = image_size
        self.layer = layer
        self.backbone_options = backbone_options
        self.sampling_rate = sampling_rate
        self.seed = seed
        self.batch_size = batch_size
        self.cache = cache
        self.out = out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # a row of numbers is neither a text nor an image
        tags.input_tags.three_d_array = True  # a batch of grey images (N, H, W)
        tags.input_tags.string = True
        return tags

    # ----- fitting ---------------------------------------------------------------------------
    def _fit_model(self, X: Any, labels: list, task: str) -> None:
        data = self._dataset(X, labels, self.modality, task, self.sampling_rate)
        if len(data) < 2:
            raise UserInputError(f"n_samples={len(data)}: a fit needs at least 2 items", hint="give more items")
        options = dict(self.backbone_options or {})
        if self.image_size is not None:
            options["image_size"] = self.image_size
        if self.layer is not None:
            options["layer"] = self.layer
        cfg = FitConfig.from_dict({
            "model": self.model or DEFAULT_MODELS.get(data.modality), "strategy": self.strategy,
            "strategy_params": dict(self.params or {}), "backbone_options": options, "modality": data.modality,
            "task": task, "seed": self.seed, "batch_size": self.batch_size, "cache": self.cache,
            "out": None if self.out is None else str(self.out)})
        if cfg.model is None:
            raise UserInputError(f"there is no default model for {data.modality} data", hint="pass model=...")
        if cfg.out is not None:  # the whole pipeline: its split, controls, verdict and run directory
            self.model_ = pipeline_fit(cfg, train=data, log=None, progress=False)
        else:
            self.model_ = self._fit_direct(cfg, data)
        self.modality_ = data.modality
        self.run_dir_ = self.model_.run_dir

    @staticmethod
    def _fit_direct(cfg: FitConfig, data: Dataset) -> TransferModel:
        """The strategy fitted on every item of ``data`` (validated like a fit's data)."""
        if cfg.model == "auto" or cfg.strategy == "auto":
            raise UserInputError("model='auto' ranks candidates on a split of the data, which the pipeline makes",
                                 hint="name a model and a strategy, or pass out=DIR to run the whole pipeline")
        train = prepare_data(data, None, modality=cfg.modality, task=cfg.task).train
        strategy = STRATEGIES.get(cfg.strategy).from_params(cfg.strategy_params)
        strategy.check_task(train.task)
        backbone = get_backbone(cfg.model, **cfg.backbone_options)
        if backbone.modality != train.modality:
            raise UserInputError(f"model {cfg.model!r} takes {backbone.modality} data but X holds {train.modality} "
                                 "items", hint="pick a model of the data's modality (see `transferkit models`)")
        model = new_model(backbone, strategy, cfg)
        strategy.fit(train, model.ctx)
        return model

    @staticmethod
    def _dataset(X: Any, y: Any, modality: str | None, task: str, sampling_rate: int | None = None) -> Dataset:
        """``X`` (and ``y``) as a :class:`Dataset`; strings are texts unless every one names an
        existing image (or audio) file."""
        if isinstance(X, (str, bytes)):
            raise UserInputError("X is one string: give a list of items (texts or file paths)",
                                 hint="wrap it in a list: [X]")
        if hasattr(X, "columns"):  # a pandas DataFrame: which column is the text is the caller's choice
            raise UserInputError(f"X is a table with columns {list(X.columns)[:10]}: give one item per row",
                                 hint="pass one column (df['text']), or join several: "
                                      "df['subject'] + '\\n' + df['body']")
        if hasattr(X, "to_numpy"):  # a pandas Series
            X = X.to_numpy()
        if modality is None and isinstance(X, (list, tuple, np.ndarray)) and len(X) \
                and all(isinstance(x, (str, Path)) for x in X):
            modality = _files_modality(X)
        if isinstance(X, np.ndarray) and X.dtype.kind in "fiu" and X.ndim == 2:
            raise UserInputError(f"X is a {X.shape} array of numbers: this estimator takes texts, image or audio "
                                 "file paths, or images (N, H, W[, C])",
                                 hint="for feature vectors use a scikit-learn model; for flattened images, "
                                      "reshape them: X.reshape(len(X), H, W)")
        return from_arrays(X, y, modality=modality, task=task, sampling_rate=sampling_rate)

    def _inputs(self, X: Any) -> Dataset:
        check_is_fitted(self, "model_")
        return self._dataset(X, None, self.modality_, self._task, self.sampling_rate)

    def _outputs(self, X: Any) -> np.ndarray:
        data = self._inputs(X)  # first: an unfitted estimator raises NotFittedError
        return self.model_.predict_outputs(data)


def _files_modality(X: Any) -> str | None:
    """``image`` or ``audio`` where every item is an existing file of that kind, else ``None``."""
    suffixes = set()
    for x in X:
        p = Path(x)
        if len(str(x)) > 4096 or not p.suffix or not p.is_file():
            return None
        suffixes.add(p.suffix.lower())
    if suffixes <= set(IMAGE_EXTENSIONS):
        return "image"
    if suffixes <= set(AUDIO_EXTENSIONS):
        return "audio"
    return None


def _labels_1d(y: Any, hint: str) -> np.ndarray:
    """``y`` as ``(N,)``; a column ``(N, 1)`` is raveled with scikit-learn's DataConversionWarning."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        return column_or_1d(y, warn=True)
    if y.ndim != 1:
        raise UserInputError(f"y has shape {y.shape}: one label per item, a 1-D sequence", hint=hint)
    return y


class TransferClassifier(ClassifierMixin, _TransferEstimator):
    """A pre-trained backbone adapted to class labels, as a scikit-learn classifier.

    ``fit(X, y)``: ``y`` any 1-D labels (strings, integers); ``classes_`` keeps them, sorted as
    ``numpy.unique`` sorts them, and ``predict`` returns them.  ``predict_proba(X)`` is
    ``(N, len(classes_))``.  Parameters: see :class:`_TransferEstimator`.
    """

    _task = "classification"

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        y = _labels_1d(y, "several labels per item are the multi-label task: transferkit.fit")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        names = [str(c) for c in self.classes_]
        if len(set(names)) != len(names):
            raise UserInputError(f"the labels {list(self.classes_)} read the same as text",
                                 hint="give labels of one type")
        self._fit_model(X, [str(v) for v in y], "classification")
        # the strategy orders classes by name: columns of predict_proba follow classes_
        self.columns_ = np.array([self.model_.classes.index(n) for n in names])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._outputs(X)[:, self.columns_]

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)  # first: an unfitted estimator raises NotFittedError
        return self.classes_[proba.argmax(1)]


class TransferRegressor(RegressorMixin, _TransferEstimator):
    """A pre-trained backbone adapted to a numeric target, as a scikit-learn regressor.

    ``fit(X, y)``: ``y`` finite numbers ``(N,)``; ``predict(X)`` ``(N,)`` in the target's units.
    Parameters: see :class:`_TransferEstimator`.
    """

    _task = "regression"

    def fit(self, X: Any, y: Any) -> TransferRegressor:
        y = _labels_1d(y, "one target value per item: several targets need one regressor each")
        if y.dtype.kind not in "fiub":  # scikit-learn's words, which its checks look for
            raise UserInputError(f"Unknown label type: y must hold numbers, got {y.dtype}",
                                 hint="one target value per item")
        try:  # scikit-learn's own check and words ("Input y contains NaN")
            y = check_array(y, ensure_2d=False, dtype="numeric", input_name="y")
        except ValueError as e:
            raise UserInputError(str(e), hint="drop the items without a finite target, or give them one") from None
        self._fit_model(X, y.astype(float), "regression")
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self._outputs(X), dtype=float)
