"""Start-up stays light: the command line's help, `models` and argument errors import no torch,
transformers or scikit-learn (issue #25), while the public API still loads on first use.

Each check runs in a fresh interpreter: this test process has imported torch already.
"""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "sklearn", "scipy", "pandas", "onnxruntime", "onnx", "safetensors", "matplotlib")

PROBE = """
import contextlib, io, json, sys
import transferkit.cli as cli
codes = []
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(cli.main(argv))
        except SystemExit as e:
            codes.append(e.code)
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _probe(argvs: list[list[str]]) -> dict:
    code = PROBE.format(argvs=argvs, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_help_models_and_argument_errors_import_no_heavy_library():
    r = _probe([["--help"], ["fit", "--help"], ["serve", "--help"], ["models"], ["models", "--json"],
                ["fit", "--no-such-option"], ["fit", "--layer", "3", "--help"], ["--version"]])
    assert r["codes"] == [0, 0, 0, 0, 0, 2, 0, 0]
    assert r["heavy"] == [], f"start-up imported {r['heavy']}"


def test_public_api_loads_on_first_use():
    code = ("import sys, transferkit as tk; assert 'torch' not in sys.modules; "
            "from transferkit.multitask import fit; assert tk.fit is fit; "
            "assert tk.load.__module__.startswith('transferkit.runs'); "
            "assert 'UserInputError' in dir(tk) and tk.__version__; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"  # fit's module brought torch with it, as it must


def test_unknown_public_name_is_an_attribute_error():
    import pytest

    import transferkit as tk

    with pytest.raises(AttributeError, match="no_such_name"):
        tk.no_such_name  # noqa: B018
    for name in tk.__all__:
        assert getattr(tk, name) is not None
