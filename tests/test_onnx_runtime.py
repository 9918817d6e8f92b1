"""The ONNX Runtime backends' own module: where its per-backbone cache lives, what it imports."""
from __future__ import annotations

import ast
import gc
import weakref
from pathlib import Path

import pytest

import transferkit

pytest.importorskip("onnxruntime", reason="pip install 'transferkit[export]'")


def test_onnx_features_are_made_once_per_backbone_and_never_written_onto_it(tiny_text_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    from transferkit.backbones import get_backbone
    from transferkit.onnx_runtime import _FEATURES, onnx_features

    bb = get_backbone(str(tiny_text_dir), max_length=16)
    first = onnx_features(bb)
    assert onnx_features(bb) is first  # one session per backbone object
    assert not any("onnx" in k for k in vars(bb))  # nothing written onto someone else's object
    other = get_backbone(str(tiny_text_dir), max_length=16)
    assert onnx_features(other) is not first  # another object, its own entry (same graph file)
    assert onnx_features(other).path == first.path
    # The table never keeps a backbone alive: the entry goes with it.
    ref = weakref.ref(bb)
    gc.collect()  # entries of backbones earlier tests dropped go first, so only this one is counted
    n = len(_FEATURES)
    del bb, first
    gc.collect()
    assert ref() is None and len(_FEATURES) == n - 1


def test_the_runtime_imports_nothing_above_its_layer():
    """onnx_runtime sits beside features (layer 3): never artifact, pipeline or export."""
    src = Path(transferkit.__file__).parent / "onnx_runtime.py"
    imported = set()
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"errors", "_files", "_memory", "data", "backbones"}, imported
    feats = Path(transferkit.__file__).parent / "features.py"
    mods = {(n.module or "").split(".")[0] for n in ast.walk(ast.parse(feats.read_text()))
            if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "export" not in mods and "onnx_runtime" in mods


def test_onnx_backend_with_a_cache_that_cannot_be_written(tiny_text_dir, tmp_path, monkeypatch):
    """The graph is exported in memory and used; only keeping it for the next run is lost."""
    import numpy as np

    from transferkit.backbones import get_backbone
    from transferkit.data import Dataset
    from transferkit.features import extract_features

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(blocker))
    bb = get_backbone(str(tiny_text_dir), max_length=16)
    data = Dataset(modality="text", inputs=["short", "a longer text " * 9, "b"])
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        got, _ = extract_features(bb, data, cache=False, backend="onnx")
    ref, _ = extract_features(bb, data, cache=False)
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    assert blocker.read_text() == "x"
