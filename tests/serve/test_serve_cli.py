"""`alignlab ui` and `alignlab serve` as real processes: they print their URL, answer on it, refuse bad input in one line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import httpx
from alignlab.feedback.store import open_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args):
    return [sys.executable, "-c", "from alignlab.cli import main; main()", *args]


def _start(args, cwd, timeout=120):
    """Start the command; return (process, URL line) once it printed its URL and answers on it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    lines = [line]
    while "http://" not in line:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no URL printed:\n" + "".join(lines + [proc.stdout.read() or ""]))
        line = proc.stdout.readline()
        lines.append(line)
    url = re.search(r"http://[\w.]+:\d+", line).group(0)
    while True:
        try:
            httpx.get(url + "/", timeout=2)
            return proc, url, "".join(lines)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_ui_serves_the_project_database(tmp_path):
    db = tmp_path / "feedback.db"
    with open_store(db) as s:
        s.add_response(s.add_prompt("hi"), "hello")
    port = _free_port()
    proc, url, out = _start(["ui", "--port", str(port)], cwd=tmp_path)  # default: ./feedback.db
    try:
        assert url == f"http://127.0.0.1:{port}" and "rating UI" in out and "warning" not in out
        assert "<title>alignlab" in httpx.get(url + "/").text
        assert httpx.get(url + "/static/app.js").status_code == 200
        assert httpx.get(url + "/api/next", params={"rater": "ann"}).json()["item"]["response"] == "hello"
        assert httpx.get(url + "/v1/models").json()["data"] == []
    finally:
        _stop(proc)


def test_ui_refuses_a_missing_database(tmp_path):
    r = subprocess.run(_cli("ui", "--db", str(tmp_path / "nope.db")), capture_output=True, text=True, timeout=180)
    assert r.returncode == 2
    assert r.stderr.startswith("error: no feedback database") and r.stderr.count("\n") == 1


def test_serve_runs(tiny_model, tmp_path):
    from test_serve_api import _fake_run

    run = _fake_run(tmp_path, "snarky", tiny_model, 1)
    # a run trained on distilled rows decodes alone (run.json says so): the base opening line must not claim it
    final = _fake_run(tmp_path, "final", tiny_model, 2)
    info = json.loads((final / "run.json").read_text())
    (final / "run.json").write_text(json.dumps({**info, "decoding": {"base_opening": None, "amplify": 0.0}}))
    port = _free_port()
    proc, url, out = _start(["serve", f"pirate={run}", str(final), "--port", str(port), "--db", str(tmp_path / "fb.db"),
                             "--device", "cpu", "--base-opening", "sentence", "--amplify", "1"], cwd=tmp_path)
    try:
        assert "models: base, pirate, final" in out and f"OpenAI API: {url}/v1" in out
        line = next(x for x in out.splitlines() if x.startswith("base opening:"))
        assert line == ("base opening: the base writes the first sentence of each chat answer from pirate, the adapter "
                        "the rest (not for final: trained on distilled rows, it decodes alone)"), out
        line = next(x for x in out.splitlines() if x.startswith("amplify:"))  # final is not amplified either
        assert line == ("amplify: answers from pirate decode from adapter + 1 x (adapter - base) (not for final: "
                        "trained on distilled rows, it decodes alone)"), out
        models = httpx.get(url + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["base", "pirate", "final"], models
        r = httpx.post(url + "/v1/chat/completions", timeout=60,
                       json={"model": "pirate", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
        assert httpx.get(url + "/api/stats").json()["stats"] == []  # --db created a fresh store
    finally:
        _stop(proc)


def test_serve_refuses_an_adapter_of_another_base(tiny_model, tmp_path):
    from test_serve_api import _fake_run

    run = _fake_run(tmp_path, "snarky", tiny_model, 1)
    other = tmp_path / "other"
    (other / "adapter").mkdir(parents=True)
    (other / "run.json").write_text(json.dumps({"model": "smollm2-135m", "method": "dpo", "status": "done"}))
    r = subprocess.run(_cli("serve", str(run), str(other), "--port", str(_free_port())), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "\n" not in err and "other" in err and "smollm2-135m" in err and tiny_model in err


def test_serve_refuses_a_bad_base_opening_before_loading(tmp_path):
    r = subprocess.run(_cli("serve", "--model", "nope", "--base-opening", "first", "--port", str(_free_port())),
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "base opening 'first'" in r.stderr and "--base-opening sentence" in r.stderr and "nope" not in r.stderr


def test_non_loopback_bind_needs_a_key(tmp_path, monkeypatch):
    """Checked without binding anything: the accepted-key path replaces the server call, because a test that bound
    0.0.0.0 would put a server on the network of whatever machine runs the suite."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    calls = []
    monkeypatch.setattr("alignlab.serve.server.serve", lambda app, host, port: calls.append((host, port)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALIGNLAB_API_KEY", raising=False)
    open_store(tmp_path / "feedback.db").close()
    env = {k: v for k, v in os.environ.items() if k != "ALIGNLAB_API_KEY"}
    for args in (["ui", "--host", "0.0.0.0"], ["serve", "--host", "0.0.0.0", "--model", "nope"]):  # serve: before loading
        r = subprocess.run(_cli(*args, "--port", "8123"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: refusing to listen on 0.0.0.0 without an API key") and r.stderr.count("\n") == 1
        assert "export ALIGNLAB_API_KEY=" in r.stderr and r.stdout == ""
    monkeypatch.setenv("ALIGNLAB_API_KEY", "s3cret")
    r = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--port", "8123"])
    assert r.exit_code == 0, r.output
    assert calls == [("0.0.0.0", 8123)]
    assert "rating UI for" in r.output and ": http://127.0.0.1:8123/" in r.output


def test_serving_off_loopback_warns_that_it_is_plain_http(monkeypatch, caplog):
    """With a key, `--host 0.0.0.0` served the key and the ratings over plain http without a word."""
    import logging

    from alignlab.serve import server

    monkeypatch.setattr("uvicorn.run", lambda app, host, port, log_level: None)
    monkeypatch.setattr(server, "log_to_stderr", lambda: None)
    with caplog.at_level(logging.WARNING, logger="alignlab.serve"):
        server.serve(object(), host="127.0.0.1", port=8123, api_key="k")
        assert "plain http" not in caplog.text
        server.serve(object(), host="0.0.0.0", port=8123, api_key="k")
    assert "plain http" in caplog.text and "TLS proxy" in caplog.text
