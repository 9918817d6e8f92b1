"""Serving checks on real weights and data: malformed requests, and the drift alarm.

A minilm-l6 linear probe is fitted on ``--n-train`` SpamAssassin e-mails of 2002 (easy-ham-1 +
spam-1, stratified; first 2 windows of 256 tokens), then served by the real app and uvicorn on
127.0.0.1 (in this process, a background thread):

1. ``--n-bad`` malformed requests, cycling through 12 kinds (broken JSON, bad UTF-8, wrong or
   missing content type, multipart to a text model, wrong shapes, unknown fields, empty batch,
   too many items, over-long text, body over the limit): every answer counted by status;
   then ``/health/ready`` and one good request.
2. Drift: a fresh server; ``--n-drift`` held-out 2002 e-mails (none used in training), 4 per
   request; the drift state (MMD of the window against the run's reference features,
   permutation p-value) read from ``/metadata``.  E-mails are cut to the server's 20,000-character
   limit, as a client must.  Then another fresh server and as many 2003
   e-mails (easy-ham-2 + spam-2).  The window is the last 200 items, tested every 50.

Run: ``python benchmarks/bench_serve_checks.py`` (about 5 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

C.setup_env()
NAME = "serve_checks"


def bad_requests(limit_items: int, limit_chars: int) -> list[tuple[str, dict]]:
    return [
        ("malformed JSON", dict(content=b'{"texts": ["a",', headers={"content-type": "application/json"})),
        ("not UTF-8", dict(content=b'{"texts": ["\xff"]}', headers={"content-type": "application/json"})),
        ("wrong content type", dict(content=b"free cash", headers={"content-type": "text/plain"})),
        ("no content type", dict(content=b'{"texts": ["a"]}')),
        ("multipart to a text model", dict(files={"files": ("a.png", b"x")})),
        ("a list, not an object", dict(json=["a", "b"])),
        ("unknown field", dict(json={"texts": ["a"], "path": "/etc/passwd"})),
        ("a number among texts", dict(json={"texts": ["a", 3]})),
        ("empty batch", dict(json={"texts": []})),
        ("too many items", dict(json={"texts": ["a"] * (limit_items + 1)})),
        ("over-long text", dict(json={"texts": ["a" * (limit_chars + 1)]})),
        ("body over the limit", dict(json={"texts": ["a" * 1000] * 12000})),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-bad", type=int, default=120)
    ap.add_argument("--n-drift", type=int, default=200)
    a = C.parse_args(ap)
    import httpx

    import transferkit as tk
    from transferkit.serve import BackgroundServer, ServeSettings, create_app

    rows = C.load_spam()
    y2002 = [r for r in rows if r["group"] in ("easy-ham-1", "spam-1")]
    y2003 = [r for r in rows if r["group"] in ("easy-ham-2", "spam-2")]
    idx = C.stratified_indices([r["label"] for r in y2002], a.n_train, seed=0)
    used = set(idx)
    held = [r for i, r in enumerate(y2002) if i not in used]
    random.Random(0).shuffle(held)
    new = list(y2003)
    random.Random(1).shuffle(new)
    tmp = Path(tempfile.mkdtemp(prefix="tk-serve-checks-"))
    data = C.write_jsonl_gz([y2002[i] for i in idx], tmp / "spam2002.jsonl.gz")
    run = tmp / "run"
    m = C.machine()
    tk.fit(data=str(data), text_columns=["subject", "body"], model="minilm-l6",
           backbone_options={"max_chunks": 2}, out=str(run), control=False, log=None)
    settings = dict(port=0, drift_window=200, drift_every=50)

    def served():
        app = create_app(run, ServeSettings(**settings))
        server = BackgroundServer(app)
        url = server.start()
        c = httpx.Client(base_url=url, timeout=120)
        t0 = time.monotonic()
        while c.get("/health/ready").status_code != 200:
            if time.monotonic() - t0 > 300:
                raise RuntimeError("the server did not get ready")
            time.sleep(0.1)
        return server, c

    res = {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "n_train": a.n_train}
    # 1. malformed requests
    server, c = served()
    meta = c.get("/metadata").json()
    limits = meta.get("settings") or {}
    kinds = bad_requests(int(limits.get("max_items", 64)), int(limits.get("max_text_chars", 20000)))
    by_status: dict[int, int] = {}
    per_kind: dict[str, int] = {}
    for i in range(a.n_bad):
        what, kw = kinds[i % len(kinds)]
        st = c.post("/predict", **kw).status_code
        by_status[st] = by_status.get(st, 0) + 1
        per_kind[what] = st
    ready = c.get("/health/ready").status_code
    good = c.post("/predict", json={"texts": [C.spam_text(held[0])]}).status_code
    c.close()
    server.stop()
    n4 = sum(v for k, v in by_status.items() if 400 <= k < 500)
    n5 = sum(v for k, v in by_status.items() if k >= 500)
    res["malformed"] = {"n": a.n_bad, "by_status": by_status, "per_kind": per_kind, "ready_after": ready,
                        "good_after": good, "n_4xx": n4, "n_5xx": n5}
    C.say(f"malformed: {by_status}; ready after: {ready}; a good request after: {good}")

    # 2. drift
    def stream(items: list[dict]) -> dict:
        server, c = served()
        try:
            tests0 = c.get("/metadata").json()["drift"]["tests"]
            for s in range(0, len(items), 4):
                # a client keeps under the server's text limit (20,000 characters by default)
                r = c.post("/predict", json={"texts": [C.spam_text(x)[:20000] for x in items[s:s + 4]]})
                assert r.status_code == 200, r.text
            t0 = time.monotonic()
            while True:
                d = c.get("/metadata").json()["drift"]
                if d["tests"] > tests0 and d.get("items_seen", 0) >= len(items):
                    break
                if time.monotonic() - t0 > 120:
                    break
                time.sleep(0.2)
            metrics = c.get("/metrics").text
            d["prometheus_alarm_line"] = next((ln for ln in metrics.splitlines()
                                               if ln.startswith("transferkit_serve_drift_alarm")), None)
            return d
        finally:
            c.close()
            server.stop()

    res["drift_2002"] = stream(held[:a.n_drift])
    C.say(f"held-out 2002: alarm {res['drift_2002'].get('alarm')}, p {res['drift_2002'].get('p_value')}")
    res["drift_2003"] = stream(new[:a.n_drift])
    C.say(f"2003: alarm {res['drift_2003'].get('alarm')}, p {res['drift_2003'].get('p_value')}")
    mal, d2, d3 = res["malformed"], res["drift_2002"], res["drift_2003"]
    res["summary"] = [
        {"item": "malformed requests → 4xx, 0 5xx, still ready", "goal": "N → N 4xx, 0 5xx",
         "measured": f"{mal['n']} → {mal['n_4xx']} 4xx, {mal['n_5xx']} 5xx; ready {mal['ready_after']}",
         "met": bool(mal["n_4xx"] == mal["n"] and mal["n_5xx"] == 0 and mal["ready_after"] == 200), "anchor": NAME},
        {"item": "drift alarm: 2003 e-mails vs a 2002 model", "goal": "fires on 2003, quiet on held-out 2002",
         "measured": f"2003 alarm {d3.get('alarm')} (p {_g(d3.get('p_value'))}); 2002 alarm {d2.get('alarm')} "
                     f"(p {_g(d2.get('p_value'))})",
         "met": bool(d3.get("alarm") is True and d2.get("alarm") is False), "anchor": NAME}]
    rows_k = [[k, str(v)] for k, v in per_kind.items()]
    body = "\n".join([
        "## Serving checks: malformed requests and the drift alarm (`benchmarks/bench_serve_checks.py`)", "",
        f"{res['date']}, {C.machine_line(m)}. A minilm-l6 linear probe fitted on {a.n_train} SpamAssassin e-mails "
        "of 2002, served on 127.0.0.1 by the real app (uvicorn, background thread).", "",
        f"**Malformed requests:** {mal['n']} sent, cycling through {len(kinds)} kinds: answers by status "
        f"{mal['by_status']} — {mal['n_4xx']} 4xx, {mal['n_5xx']} 5xx; `/health/ready` afterwards "
        f"{mal['ready_after']}, a good request afterwards {mal['good_after']}.", "",
        C.md_table(["kind", "status"], rows_k), "",
        f"**Drift** (window {settings['drift_window']} items, tested every {settings['drift_every']}; a fresh server "
        f"per stream of {a.n_drift} e-mails, 4 per request):", "",
        C.md_table(["stream", "alarm", "MMD statistic", "p-value", "items seen", "Prometheus line"], [
            ["held-out 2002 e-mails", str(d2.get("alarm")), _g(d2.get('statistic')), _g(d2.get('p_value')),
             str(d2.get("items_seen")), f"`{d2.get('prometheus_alarm_line')}`"],
            ["2003 e-mails", str(d3.get("alarm")), _g(d3.get('statistic')), _g(d3.get('p_value')),
             str(d3.get("items_seen")), f"`{d3.get('prometheus_alarm_line')}`"]])])
    C.save_result(NAME, res)
    C.update_section(NAME, body)


def _g(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


if __name__ == "__main__":
    main()
