"""`srft view` server side: labels database, export, security (Host, CSRF, Origin, escaping), list filters.

`viewer_data` and `running_server` are also used by the browser test (tests/test_view_browser.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from srft.cli import app as cli
from srft.io import write_trajectories
from srft.labels import StepLabel, read_labels, write_labels
from srft.model import (FunctionCall, Message, Outcome, Source, ToolCall, Trajectory, repo_from_instance_id,
                        steps_from_messages, trajectory_id)
from srft.view.app import ViewConfig, create_app
from srft.view.db import LabelsDB, LabelsDBError, export_labels

XSS = {  # payloads in every place trajectory text is shown; any of them running sets window.__xss
    "task": "Fix it <b>now</b> <script>window.__xss = 'task'</script>",
    "thought": "</pre><script>window.__xss = 'thought'; alert('thought')</script>",
    "command": "echo '<svg onload=\"window.__xss=1\">'",
    "obs1": "<script>window.__xss = 'obs'; alert(1)</script>",
    "obs2": "<img src=x onerror=\"window.__xss='img'; alert(2)\">",
    "reason": "<img src=y onerror=\"window.__xss='reason'\"> looks wrong",
}


def make_trajectory(instance_id: str, n_steps: int, status: str = "unresolved", fmt: str = "swe-agent-traj",
                    observations: dict[int, str] | None = None, thoughts: dict[int, str] | None = None,
                    task: str | None = None, command: str | None = None) -> Trajectory:
    observations, thoughts = observations or {}, thoughts or {}
    messages = [Message(role="system", content="You are a helpful agent."),
                Message(role="user", content=task or f"Please fix issue {instance_id}.")]
    for i in range(1, n_steps + 1):
        args = {"command": command if command and i == 1 else f"grep -n 'def f{i}' src/mod.py"}
        messages.append(Message(role="assistant", content=thoughts.get(i, f"Step {i}: look at f{i}."),
                                tool_calls=[ToolCall(id=f"call_{i}", function=FunctionCall(
                                    name="bash", arguments=json.dumps(args)))]))
        messages.append(Message(role="tool", name="bash", tool_call_id=f"call_{i}",
                                content=observations.get(i, f"{i}: def f{i}(x):")))
    return Trajectory(id=trajectory_id(instance_id, messages), instance_id=instance_id,
                      repo=repo_from_instance_id(instance_id),
                      source=Source(format=fmt, path=f"/runs/demo/{instance_id}.traj", sha256="0" * 64),
                      messages=messages, steps=steps_from_messages(messages),
                      outcome=Outcome.from_status(status, "report.json"))


def viewer_data(root: Path) -> dict:
    """A store of 4 trajectories (one full of XSS payloads, one with a long output), two critic files."""
    long_output = "\n".join(f"line {i} of a very long test log" for i in range(300))
    trajs = {
        "plain": make_trajectory("django__django-11099", 5, observations={3: long_output}),
        "resolved": make_trajectory("astropy__astropy-12907", 3, status="resolved"),
        "other": make_trajectory("sympy__sympy-20590", 2, fmt="mini-swe-agent-1"),
        "xss": make_trajectory("evil__repo-1", 3, task=XSS["task"], thoughts={1: XSS["thought"]},
                               command=XSS["command"], observations={1: XSS["obs1"], 2: XSS["obs2"]}),
    }
    write_trajectories(root / "data" / "trajectories.parquet", sorted(trajs.values(), key=lambda t: t.id))
    p, x = trajs["plain"].id, trajs["xss"].id
    heuristic = [StepLabel(trajectory_id=p, step=s, label=lab, reason=f"rule {s}", source="heuristic")
                 for s, lab in zip(range(1, 6), ["good", "mistake", "unnecessary", "recover", "good"], strict=True)]
    heuristic.append(StepLabel(trajectory_id=x, step=2, label="mistake", reason=XSS["reason"], source="heuristic"))
    write_labels(root / "heuristic.jsonl", heuristic)
    # a critic file made outside srft: trajectories named by instance_id
    rows = [{"instance_id": "django__django-11099", "step": s, "label": "good", "reason": "fine"} for s in (1, 2, 3)]
    (root / "llm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"data": root / "data", "annotations": [root / "heuristic.jsonl", root / "llm.jsonl"],
            "db": root / "labels.db", "ids": {k: t.id for k, t in trajs.items()}, "trajs": trajs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(config: ViewConfig) -> Iterator[str]:
    """uvicorn serving the app in a thread on config.port; stopped (and joined) on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(config), host=config.host, port=config.port,
                                           log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("viewer did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture()
def data(tmp_path):
    return viewer_data(tmp_path)


@pytest.fixture()
def client(data):
    config = ViewConfig(data=data["data"], annotations=data["annotations"], labels_db=data["db"], port=8800,
                        annotator="alice")
    return TestClient(create_app(config), base_url="http://127.0.0.1:8800")


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', html).group(1)


# -- the database and `srft labels export` ---------------------------------------------------------------------

def test_db_wal_history_and_export(tmp_path):
    db = LabelsDB(tmp_path / "l.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "l.db")) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.set("t2", 1, "alice", "mistake", "  wrong file  ")
    db.set("t1", 3, "alice", "good")
    db.set("t1", 3, "alice", "recover", "changed my mind")
    db.set("t1", 2, "bob", "good")
    db.set("t1", 2, "alice", "good")
    db.set("t1", 1, "bob", "good")
    db.set("t1", 1, "bob", None)  # cleared
    assert db.history_count() == 7
    assert [(x.trajectory_id, x.step, x.annotator, x.label) for x in db.labels()] == [
        ("t1", 2, "alice", "good"), ("t1", 2, "bob", "good"), ("t1", 3, "alice", "recover"),
        ("t2", 1, "alice", "mistake")]
    assert db.labels(trajectory_id="t2")[0].note == "wrong file"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", db.labels()[0].updated_at)
    labels, report = export_labels(db)
    assert [(x.trajectory_id, x.step, x.label, x.source, x.reason) for x in labels] == [
        ("t1", 2, "good", "human:alice,bob", None), ("t1", 3, "recover", "human:alice", "changed my mind"),
        ("t2", 1, "mistake", "human:alice", "wrong file")]
    assert report["multi_annotator_steps"] == 1 and report["conflicts"] == 0
    db.set("t1", 3, "bob", "mistake")
    with pytest.raises(LabelsDBError, match=r"t1 step 3: alice=recover, bob=mistake"):
        export_labels(db)
    latest, report = export_labels(db, on_conflict="latest")
    assert {(x.step, x.label) for x in latest if x.trajectory_id == "t1"} == {(2, "good"), (3, "mistake")}
    only_bob, _ = export_labels(db, annotators=["bob"])
    assert [(x.step, x.label) for x in only_bob] == [(2, "good"), (3, "mistake")]
    with pytest.raises(ValueError, match="unknown label"):
        db.set("t1", 1, "alice", "bad")


def test_labels_export_cli(tmp_path):
    db = LabelsDB(tmp_path / "l.db")
    db.set("b", 2, "alice", "mistake", "oops")
    db.set("a", 1, "alice", "good")
    db.set("a", 1, "bob", "unnecessary")
    runner = CliRunner()
    out = tmp_path / "gold.jsonl"
    conflict = runner.invoke(cli, ["labels", "export", str(tmp_path / "l.db"), "--out", str(out), "--json"])
    assert conflict.exit_code == 2 and "--annotator NAME" in json.loads(conflict.stdout)["error"]
    assert not out.exists()
    ok = runner.invoke(cli, ["labels", "export", str(tmp_path / "l.db"), "--out", str(out), "--annotator", "alice",
                             "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["labels"] == 2
    gold = read_labels(out)
    assert [(x.trajectory_id, x.step, x.label, x.reason, x.source) for x in gold] == [
        ("a", 1, "good", None, "human:alice"), ("b", 2, "mistake", "oops", "human:alice")]
    first = out.read_bytes()
    runner.invoke(cli, ["labels", "export", str(tmp_path / "l.db"), "--out", str(out), "--annotator", "alice"])
    assert out.read_bytes() == first  # same labels, same bytes
    missing = runner.invoke(cli, ["labels", "export", str(tmp_path / "nope.db"), "--out", str(out)])
    assert missing.exit_code == 2 and "no such labels database" in missing.output


# -- security --------------------------------------------------------------------------------------------------

def raw_get(port: int, host_header: str, path: str = "/") -> tuple[int, str]:
    """A hand-written HTTP/1.1 request (a browser after DNS rebinding sends the attacker's Host)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def test_foreign_host_header_is_refused_over_raw_http(data):
    port = free_port()
    config = ViewConfig(data=data["data"], labels_db=data["db"], port=port, allow_hosts=["labeller.internal"])
    with running_server(config):
        assert raw_get(port, f"127.0.0.1:{port}")[0] == 200
        assert raw_get(port, f"localhost:{port}")[0] == 200
        assert raw_get(port, f"labeller.internal:{port}")[0] == 200
        status, body = raw_get(port, f"attacker.example:{port}")
        assert status == 421 and "not allowed" in body
        assert raw_get(port, f"127.0.0.1:{port + 1}")[0] == 421  # right name, wrong port
        assert raw_get(port, "127.0.0.1")[0] == 421
        assert raw_get(port, f"attacker.example:{port}", f"/t/{data['ids']['plain']}")[0] == 421
        assert raw_get(port, f"attacker.example:{port}", "/static/app.js")[0] == 421


def test_state_changes_need_post_session_and_token(client, data):
    page = client.get(f"/t/{data['ids']['plain']}")
    assert page.status_code == 200
    assert "httponly" in page.headers["set-cookie"].lower() and "samesite=strict" in page.headers["set-cookie"].lower()
    assert "script-src 'self'" in page.headers["content-security-policy"]
    token = csrf_of(page.text)
    body = {"trajectory_id": data["ids"]["plain"], "step": 2, "label": "mistake"}
    assert client.post("/api/label", json=body).status_code == 403  # no token
    assert client.post("/api/label", json=body, headers={"X-CSRF-Token": "x" + token}).status_code == 403
    stranger = TestClient(client.app, base_url="http://127.0.0.1:8800")  # another browser: no session cookie
    assert stranger.post("/api/label", json=body, headers={"X-CSRF-Token": token}).status_code == 403
    foreign = client.post("/api/label", json=body, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert client.get("/api/label").status_code == 405
    assert LabelsDB(data["db"]).labels() == []
    ok = client.post("/api/label", json=body, headers={"X-CSRF-Token": token, "Origin": "http://127.0.0.1:8800"})
    assert ok.status_code == 200 and ok.json()["saved"]["label"] == "mistake"
    assert [(x.step, x.label, x.annotator) for x in LabelsDB(data["db"]).labels()] == [(2, "mistake", "alice")]
    # bad input is refused with a reason, and nothing is stored
    for bad, code in [({**body, "step": 6}, 422), ({**body, "label": "bad"}, 422),
                      ({**body, "trajectory_id": "nope"}, 404), ({**body, "extra": 1}, 422)]:
        assert client.post("/api/label", json=bad, headers={"X-CSRF-Token": token}).status_code == code
    assert len(LabelsDB(data["db"]).labels()) == 1


def test_annotator_change_needs_token(client, data):
    token = csrf_of(client.get("/").text)
    assert client.post("/annotator", data={"name": "mallory", "csrf": "nope"}).status_code == 403
    moved = client.post("/annotator", data={"name": "bob", "csrf": token, "next": "//evil.example/x"},
                        follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == "/"
    assert client.post("/annotator", data={"name": "<b>", "csrf": token}).status_code == 422
    client.post("/api/label", json={"trajectory_id": data["ids"]["plain"], "step": 1, "label": "good"},
                headers={"X-CSRF-Token": token})
    assert [x.annotator for x in LabelsDB(data["db"]).labels()] == ["bob"]


def test_trajectory_text_is_escaped(client, data):
    html = client.get(f"/t/{data['ids']['xss']}").text
    assert "<script>window" not in html and "<img src=" not in html and "<svg onload" not in html
    assert "&lt;script&gt;window.__xss = &#39;obs&#39;; alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=y onerror=&#34;window.__xss=&#39;reason&#39;&#34;&gt; looks wrong" in html
    assert "Fix it &lt;b&gt;now&lt;/b&gt;" in html
    assert len(re.findall(r"<script\b", html)) == 1  # only our own /static/app.js
    listing = client.get("/", params={"q": "<script>alert(1)</script>"}).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing and "<script>alert" not in listing


# -- pages -----------------------------------------------------------------------------------------------------

def listed(client, **params) -> set[str]:
    html = client.get("/", params=params).text
    return set(re.findall(r'href="/t/([0-9a-f]{16})"', html))


def test_list_filters_and_counts(client, data):
    ids = data["ids"]
    assert listed(client) == set(ids.values())
    assert listed(client, outcome="resolved") == {ids["resolved"]}
    assert listed(client, outcome="unresolved") == {ids["plain"], ids["other"], ids["xss"]}
    assert listed(client, format="mini-swe-agent-1") == {ids["other"]}
    assert listed(client, mistakes="any") == {ids["plain"], ids["xss"]}
    assert listed(client, mistakes="llm") == set()
    assert listed(client, q="astropy") == {ids["resolved"]}
    assert listed(client, labelled="no") == set(ids.values())
    token = csrf_of(client.get("/").text)
    for step, label in [(1, "good"), (2, "good")]:  # llm says good, good; heuristic good, mistake
        client.post("/api/label", json={"trajectory_id": ids["plain"], "step": step, "label": label},
                    headers={"X-CSRF-Token": token})
    assert listed(client, disagree="1") == {ids["plain"]}
    assert listed(client, labelled="partial") == {ids["plain"]}
    html = client.get("/", params={"q": "django"}).text
    assert re.search(r'<span class="chip mistake" title="mistake">1</span>', html)  # heuristic's counts


def test_trajectory_page_cards_and_live_agreement(client, data):
    plain = data["ids"]["plain"]
    html = client.get(f"/t/{plain}").text
    assert html.count('<article class="step') == 5
    assert "300 lines" in html and "<details class=\"obs long\">" in html  # the long output is collapsed
    assert "heuristic: mistake" in html and "rule 2" in html and "llm: good" in html
    token = csrf_of(html)
    post = lambda step, label: client.post("/api/label", headers={"X-CSRF-Token": token}, json={  # noqa: E731
        "trajectory_id": plain, "step": step, "label": label, "note": f"note {step}"}).json()
    post(1, "good")
    post(2, "mistake")
    live = post(3, "good")
    # heuristic: good/mistake/unnecessary vs human good/mistake/good -> 2 of 3; llm: good x3 -> 2 of 3
    assert live["trajectory"]["heuristic"]["steps"] == 3 and live["trajectory"]["heuristic"]["accuracy"] == 0.6667
    assert live["trajectory"]["heuristic"]["binary_f1"] == 1.0
    assert live["trajectory"]["llm"]["binary_f1"] == 0.0 and live["labelled"] == 3
    again = client.get(f"/t/{plain}").text  # reload: labels and notes come back
    assert again.count('aria-pressed="true"') == 3 and "note 2</textarea>" in again
    assert 'data-label="mistake" tabindex' in again


def test_bad_annotation_file_stops_startup(data, tmp_path):
    (tmp_path / "broken.jsonl").write_text(json.dumps({"instance_id": "nope__nope-1", "step": 1,
                                                       "label": "good"}) + "\n")
    with pytest.raises(ValueError, match="broken.jsonl:1: instance_id 'nope__nope-1' matches no trajectory"):
        create_app(ViewConfig(data=data["data"], annotations=[tmp_path / "broken.jsonl"], labels_db=data["db"]))
    with pytest.raises(FileNotFoundError, match="no trajectory store"):
        create_app(ViewConfig(data=tmp_path / "empty", labels_db=data["db"]))


def test_srft_view_command_serves_until_interrupted(data):
    port = free_port()
    srft = Path(sys.executable).parent / "srft"
    proc = subprocess.Popen([str(srft), "view", str(data["data"]), "--port", str(port), "--annotations",
                             str(data["annotations"][0]), "--annotator", "carol"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                    html = reply.read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert 'value="carol"' in html and "heuristic" in html
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output and (data["data"] / "labels.db").exists()


# -- real trajectories (../shared) -----------------------------------------------------------------------------

DEEPSEEK = "mini-swe-agent_deepseek-chat"
REAL_FILES = ("deepseek_chat_dev/pvlib__pvlib-python-1072.traj.json",
              "deepseek_chat_dev/marshmallow-code__marshmallow-1343.traj.json")


def real_store(traj_dir: Path, root: Path) -> dict:
    """Two real mini-swe-agent trajectories ingested with their harness report, and label files made outside
    srft: gold keyed by `file` (relative, as ../shared's labels.jsonl names them), a critic keyed by instance."""
    from srft.formats.ingest import run_ingest

    folder = traj_dir / DEEPSEEK
    run_ingest([folder / f for f in REAL_FILES], root / "data",
               outcomes=[folder / "deepseek__deepseek-chat.deepseek_chat_dev.json"])
    gold = [{"file": REAL_FILES[0], "step": s, "label": lab}
            for s, lab in [(1, "good"), (2, "good"), (3, "unnecessary"), (4, "mistake"), (5, "recover")]]
    critic = [{"instance_id": "pvlib__pvlib-python-1072", "step": s, "label": lab, "reason": f"critic {s}"}
              for s, lab in [(1, "good"), (2, "mistake"), (3, "unnecessary"), (4, "mistake"), (6, "good")]]
    for name, rows in (("gold", gold), ("critic", critic)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"data": root / "data", "gold": root / "gold.jsonl", "critic": root / "critic.jsonl"}


def test_real_trajectories_in_viewer_and_critic_eval(traj_dir, tmp_path):
    real = real_store(traj_dir, tmp_path)
    result = CliRunner().invoke(cli, ["critic-eval", "--gold", str(real["gold"]), "--pred", str(real["critic"]),
                                      "--data", str(real["data"]), "--bootstrap", "50", "--json"])
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)["preds"][0]
    assert (rep["matched_steps"], rep["gold_only_steps"], rep["pred_only_steps"]) == (4, 1, 1)
    assert rep["micro_f1"]["value"] == 0.75 and rep["binary_precision"]["value"] == 0.5

    config = ViewConfig(data=real["data"], annotations=[real["critic"]], labels_db=tmp_path / "l.db", port=8800)
    client = TestClient(create_app(config), base_url="http://127.0.0.1:8800")
    listing = client.get("/", params={"outcome": "unresolved"}).text
    assert "pvlib__pvlib-python-1072" in listing and "marshmallow-code__marshmallow-1343" not in listing
    tid = re.search(r'href="/t/([0-9a-f]{16})"', listing).group(1)
    page = client.get(f"/t/{tid}").text
    assert page.count('<article class="step') == 74  # the real trajectory's assistant turns
    assert "critic: mistake" in page and "critic 2" in page
    assert "pvlib" in re.search(r'<section class="task">(.*?)</section>', page, re.S).group(1)
    assert "mini-swe-agent-1.1" in page and ">unresolved</span>" in page


QWEN = "qwen2.5-coder-instruct"


def test_token_mask_view_is_what_build_makes(data, tokenizer_dir):
    from srft.labels import apply_labels
    from srft.dataset.masks import IGNORE_INDEX, build_samples
    from srft.policy import PolicyConfig, step_weights
    from srft.dataset.render import load_tokenizer

    config = ViewConfig(data=data["data"], annotations=data["annotations"], labels_db=data["db"], port=8800,
                        tokenizer=tokenizer_dir / QWEN, mask_labels=("mistake", "unnecessary"))
    client = TestClient(create_app(config), base_url="http://127.0.0.1:8800")
    plain = data["ids"]["plain"]
    assert 'id="mask-toggle"' in client.get(f"/t/{plain}").text
    view = client.get(f"/api/mask/{plain}", params={"policy": "srft", "source": "heuristic"}).json()

    traj = apply_labels([data["trajs"]["plain"]], read_labels(data["annotations"][0]))[0]
    weights = step_weights(traj, PolicyConfig(name="srft", mask_labels=["mistake", "unnecessary"]))
    assert weights == [1.0, 0.0, 0.0, 1.0, 1.0] == view["weights"]
    sample = build_samples(traj, load_tokenizer(str(tokenizer_dir / QWEN)), weights).samples[0]
    assert "".join(s["text"] for s in view["segments"]) == sample.text  # runs cover the render exactly
    assert sum(s["tokens"] for s in view["segments"]) == view["tokens"] == len(sample.input_ids)
    assert sum(s["tokens"] for s in view["segments"] if s["trained"]) == view["trained"] == \
        sum(x != IGNORE_INDEX for x in sample.labels)
    runs = {s["step"]: s for s in view["segments"] if s["step"] is not None}
    assert [n for n, s in sorted(runs.items()) if s["trained"]] == [1, 4, 5]
    assert runs[2]["label"] == "mistake" and runs[2]["text"].startswith("Step 2: look at f2.")
    assert runs[3]["label"] == "unnecessary" and not runs[3]["trained"]
    assert runs[5]["text"].endswith("<|im_end|>")  # the end-of-turn token is trained

    client.post("/api/label", headers={"X-CSRF-Token": csrf_of(client.get("/").text)},
                json={"trajectory_id": plain, "step": 5, "label": "mistake"})
    human = client.get(f"/api/mask/{plain}", params={"source": "human"}).json()
    assert human["weights"] == [1.0, 1.0, 1.0, 1.0, 0.0]
    resolved = client.get(f"/api/mask/{data['ids']['resolved']}", params={"policy": "rft"}).json()
    assert resolved["weights"] == [1.0, 1.0, 1.0] and resolved["trained"] > 0
    assert "leaves this trajectory out (unresolved)" in client.get(f"/api/mask/{plain}",
                                                                     params={"policy": "rft"}).json()["note"]
    # the page cannot make the server import a dotted path, nor name a source that does not exist
    assert client.get(f"/api/mask/{plain}", params={"policy": "os:system"}).status_code == 422
    assert client.get(f"/api/mask/{plain}", params={"source": "nope"}).status_code == 422
