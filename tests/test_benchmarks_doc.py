"""BENCHMARKS.md stays traceable: each section names the command, commit and results file that made it,
results files record the run that measured them, the summary has one row per goal, and the figures
that transferkit's messages cite (``transferkit/studies.json``) are the ones the results files hold.

Nothing here measures anything: the benchmark scripts' helpers are run on their recorded results.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture
def C(monkeypatch, tmp_path):
    """``benchmarks/_common.py``, imported with the environment its scripts change restored afterwards."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))  # bench scripts point it elsewhere
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and make their cache folder in the test's
    import _common

    monkeypatch.setattr(_common, "_RUN", {})
    return _common


def _bench(name: str):
    return importlib.import_module(name)


def test_command_line_spells_out_every_argument(C):
    cmd = C.command_line("benchmarks/bench_x.py", {"items": 300, "quick": False, "no_write": False, "only": None,
                                                   "finetune": True, "tasks": "a->b,c", "capacity_s": 30.0})
    assert cmd == "python benchmarks/bench_x.py --items 300 --finetune --tasks 'a->b,c' --capacity-s 30.0"


def test_save_result_records_the_invocation(C, monkeypatch, tmp_path):
    monkeypatch.setattr(C, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", [str(BENCH / "bench_x.py"), "--items", "7"])
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    a = C.parse_args(ap)
    assert a.items == 7
    C.save_result("x", {"machine": {"commit": "abc1234", "date": "2026-01-01 00:00 UTC"}, "value": 1})
    run = json.loads((tmp_path / "x.json").read_text())["run"]
    assert run["argv"] == ["--items", "7"]
    assert run["args"] == {"items": 7, "seeds": 3}
    assert run["command"] == "python benchmarks/bench_x.py --items 7 --seeds 3"  # the default spelled out too
    # A section rewritten from its results file keeps the run that measured it.
    kept = {"run": {"command": "python benchmarks/bench_x.py --items 1"}, "machine": {}}
    C.save_result("y", kept)
    assert json.loads((tmp_path / "y.json").read_text())["run"]["command"].endswith("--items 1")


def test_save_result_without_parsed_arguments_is_refused(C, monkeypatch, tmp_path):
    monkeypatch.setattr(C, "RESULTS", tmp_path)
    with pytest.raises(RuntimeError, match="parse_args"):
        C.save_result("x", {"machine": {}})
    assert not (tmp_path / "x.json").exists()


def test_every_script_records_its_arguments():
    for script in sorted(BENCH.glob("bench_*.py")):
        text = script.read_text()
        assert "ap.parse_args(" not in text, f"{script.name}: parse with C.parse_args(ap) so results record the run"
        assert "C.parse_args(ap)" in text, script.name


def test_one_goal_merges_cases_and_says_how_many_met(C):
    e = C.one_goal("gain", ">= 9", [("a", "+24", True), ("b", "+22", True), ("c", "+0.2", False)], "adapt")
    assert e == {"item": "gain", "goal": ">= 9", "measured": "a: +24; b: +22; c: +0.2", "met": False,
                 "anchor": "adapt", "met_note": "met on 2 of 3"}
    assert "met_note" not in C.one_goal("g", "x", [("a", "1", True)], "adapt", context="ctx")


def test_summary_shows_goals_only_one_row_each(C, monkeypatch, tmp_path):
    monkeypatch.setattr(C, "RESULTS", tmp_path)
    (tmp_path / "read.json").write_text(json.dumps({"summary": [
        {"item": "read", "goal": "< 10 s", "measured": "0.5 s", "met": True, "anchor": "read"},
        {"item": "a record", "goal": "record", "measured": "42", "met": None, "anchor": "read"},
        C.one_goal("DA", ">= 9", [("a", "+24", True), ("b", "+0", False)], "read")]}))
    table = C.summary_table()
    assert "| read: < 10 s | 0.5 s | **yes** | [read](#read) |" in table
    assert "| DA: >= 9 | a: +24; b: +0 | **NO** (met on 1 of 2) | [read](#read) |" in table
    assert "a record" not in table


def test_decorate_puts_anchor_and_provenance_once(C, monkeypatch, tmp_path):
    monkeypatch.setattr(C, "RESULTS", tmp_path)
    (tmp_path / "lora.json").write_text(json.dumps({
        "machine": {"commit": "abc1234+uncommitted changes in transferkit/", "date": "2026-01-01 00:00 UTC"},
        "run": {"command": "python benchmarks/bench_lora.py --items 300", "args_recorded": False,
                "note": "300 items are stated"}}))
    body = '<a id="old"></a>\n## LoRA (`benchmarks/bench_lora.py`)\n\nMachine: x.\n\n<a id="sub"></a>\n### Sub\n'
    once = C.decorate("lora", body)
    assert C.decorate("lora", once) == once
    lines = once.splitlines()
    assert lines[:3] == ['<a id="lora"></a>', "## LoRA (`benchmarks/bench_lora.py`)", ""]
    assert lines[3] == ("**Regenerate:** `python benchmarks/bench_lora.py --items 300` — commit `abc1234` with "
                        "uncommitted changes in transferkit/, 2026-01-01 00:00 UTC (arguments not recorded by the "
                        "run; 300 items are stated). Results: `benchmarks/results/lora.json`.")
    assert '<a id="sub"></a>' in lines and '<a id="old"></a>' not in lines


def test_a_missing_commit_is_said(C):
    assert C._commit_text({}) == "commit not recorded"
    assert C._commit_text({"commit": "unknown"}) == "commit not recorded"


# ----------------------------------------------------------------------------- the repository's own files
def _sections(text: str) -> list[tuple[str, str]]:
    return re.findall(r"<!-- bench:(\w+) -->\n(.*?)\n<!-- /bench:\1 -->", text, re.S)


def test_benchmarks_md_sections_are_traceable(C):
    text = C.BENCHMARKS_MD.read_text()
    secs = _sections(text)
    names = [n for n, _ in secs]
    assert names == [n for n in C.SECTIONS if n in names] and names[0] == "summary"
    for name, body in secs[1:]:
        lines = body.splitlines()
        assert lines[0] == f'<a id="{C.ANCHORS[name]}"></a>', name
        assert lines[1].startswith("## ") and not re.match(r"## \d", lines[1]), lines[1]
        assert lines[3].startswith(C.PROVENANCE), name
        block = "\n".join(lines[3:8])
        assert "`python benchmarks/bench_" in block and ("commit `" in block or "commit not recorded" in block), name
    summary = secs[0][1]
    assert not re.search(r"#\d|issue", summary), "a summary row cites an issue the reader cannot see"
    anchors = set(re.findall(r'<a id="([^"]+)"', text))
    for link in re.findall(r"\]\(#([^)]+)\)", summary):
        assert link in anchors, link


def test_every_results_file_records_its_run():
    for p in sorted((BENCH / "results").glob("*.json")):
        d = json.loads(p.read_text())
        runs = [d["run"]] if "run" in d else [v["run"] for v in d.values() if isinstance(v, dict) and "run" in v]
        assert runs, f"{p.name} does not record the run that made it"
        for run in runs:
            assert run["command"].startswith("python benchmarks/bench_"), p.name
            assert run["args_recorded"] or run.get("note"), f"{p.name}: say what is known of its arguments"


def test_rebuilding_benchmarks_md_from_the_results_changes_nothing(C, monkeypatch, tmp_path):
    copy = tmp_path / "BENCHMARKS.md"
    copy.write_text(C.BENCHMARKS_MD.read_text())
    monkeypatch.setattr(C, "BENCHMARKS_MD", copy)
    C.rebuild()
    assert copy.read_text() == (REPO / "BENCHMARKS.md").read_text(), "run `python benchmarks/run_all.py --rebuild`"


def test_runs_logs_live_with_the_results():
    for script in ("bench_strategies.py", "bench_transferability.py"):
        text = (BENCH / script).read_text()
        assert "/tmp/" not in text, f"{script}: keep its runs log under benchmarks/results/"
    log = BENCH / "results" / "strategies-runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    res = json.loads((BENCH / "results" / "strategies.json").read_text())
    assert len(runs) == len(res["runs"]) and all(r["measured"]["commit"] for r in runs)
    assert sum(r.get("read_back", False) for r in res["runs"]) == res["reused_runs"]


def test_studies_are_the_figures_of_the_results_files(C):
    from transferkit import _studies

    def results(name: str) -> dict:
        return json.loads((BENCH / "results" / f"{name}.json").read_text())

    expected = {"strategies": (_bench("bench_strategies").study_figures(results("strategies")),
                               results("strategies")["machine"]),
                "lora_share": (_bench("bench_finetune").study_figures(results("finetune")),
                               results("finetune")["machine"])}
    expected.update(_bench("bench_transferability").study_figures(results("transferability")))
    assert set(expected) == {"strategies", "auto_pick", "inner_layer_finetune", "lora_share"}
    for name, (figures, machine) in expected.items():
        entry = _studies.study(name)
        assert (entry["commit"], entry["date"]) == (machine["commit"], machine["date"]), name
        assert {k: v for k, v in entry.items() if k not in ("source", "section", "commit", "date")} == figures, name
