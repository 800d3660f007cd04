"""`srft build` / `srft audit`: the dataset contract, counts, determinism and the CLI convention."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from srft.dataset.audit import audit, check_row, html_page
from srft.dataset.build import BuildConfig, BuildError, run_build
from srft.io import write_trajectories
from srft.labels import LabelFileError, StepLabel, write_labels
from srft.dataset.masks import IGNORE_INDEX, MaskConfig
from srft.policy import PolicyConfig

from conftest import TOKENIZER_DIR, need_shared
from test_masks import parallel_traj, real_trajs, text_traj, tool_traj  # noqa: F401 (fixture)

QWEN = str(TOKENIZER_DIR / "qwen2.5-coder-instruct")
COLUMNS = ["input_ids", "labels", "trajectory_id", "instance_id", "resolved", "policy", "step_spans", "step_labels"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, real_trajs) -> tuple[Path, Path, list]:  # noqa: F811 (pytest fixture argument)
    """A store of real (one per format) and synthetic trajectories, and a label file for them."""
    need_shared(TOKENIZER_DIR)
    seen, picked = set(), []
    for t in real_trajs:
        if t.source.format not in seen:
            seen.add(t.source.format)
            picked.append(t)
    synthetic = [tool_traj(resolved=False), parallel_traj(resolved=True, iid="django__django-11099"),
                 text_traj(resolved=False, iid="pylint-dev__astroid-1333")]
    trajs = sorted(picked + synthetic, key=lambda t: t.id)
    d = tmp_path_factory.mktemp("store")
    write_trajectories(d / "trajectories.parquet", trajs)
    labels = [StepLabel(trajectory_id=t.id, step=s.number, source="oracle",
                        label="mistake" if s.number == 2 else "unnecessary" if s.number == 3 else "good")
              for t in trajs for s in t.steps]
    write_labels(d / "labels.jsonl", labels)
    return d, d / "labels.jsonl", trajs


def build(store, out, **kw) -> dict:
    data, labels, _ = store
    policy = kw.pop("policy", PolicyConfig(name="srft"))
    return run_build(data, out, BuildConfig(tokenizer=kw.pop("tokenizer", QWEN), policy=policy, **kw),
                     annotations=labels)


def test_dataset_contract(store, tmp_path):
    import datasets

    report = build(store, tmp_path)
    ds = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert ds.column_names == COLUMNS  # no loss_weights without soft weights
    trajs = {t.id: t for t in store[2]}
    assert report["samples"] == len(ds) == len(trajs) and report["trajectories_used"] == len(trajs)
    masked, by_label = 0, {}
    for row in ds:
        assert check_row(row) == []
        traj = trajs[row["trajectory_id"]]
        assert row["instance_id"] == traj.instance_id and row["resolved"] == traj.outcome.resolved
        assert row["policy"] == "srft" and [s["step"] for s in row["step_spans"]] == [s.number for s in traj.steps]
        for span, label in zip(row["step_spans"], row["step_labels"]):
            assert label == ("mistake" if span["step"] == 2 else "unnecessary" if span["step"] == 3 else "good")
            if label == "mistake" and traj.outcome.resolved is not True:
                assert span["weight"] == 0 and set(row["labels"][span["start"]:span["end"]]) == {IGNORE_INDEX}
                masked += span["end"] - span["start"]
            else:
                assert span["weight"] == 1  # resolved trajectories train every step, mistakes included
                by_label[label] = by_label.get(label, 0) + span["end"] - span["start"]
    assert report["masked_step_tokens"] == masked > 0
    assert report["tokens"] == sum(len(r) for r in ds["input_ids"])
    assert report["trained_tokens"] == sum(x != IGNORE_INDEX for r in ds["labels"] for x in r)
    assert report["trained_tokens_by_label"] == by_label and by_label["mistake"] > 0
    assert report["inputs"]["store"]["sha256"] and report["template"]["prefix_preserving"]
    assert json.loads((tmp_path / "build_report.json").read_text())["samples"] == len(ds)


def test_same_inputs_same_bytes(store, tmp_path):
    """num_proc 1 and 2, two output dirs: byte-identical dataset files and path-free exports."""
    exports = ["trl", "axolotl", "verl", "torchtune", "llamafactory"]
    build(store, tmp_path / "a", exports=exports)
    build(store, tmp_path / "b", exports=exports, num_proc=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10
    path_bearing = {"build_report.json", "axolotl.yaml", "verl_overrides.txt", "srft_torchtune.py", "llamafactory.yaml",
                    "trl.yaml", "torchtune.yaml"}
    for rel in files:
        if rel.name not in path_bearing:
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_soft_weights_and_policies(store, tmp_path):
    import datasets

    soft = build(store, tmp_path / "soft", policy=PolicyConfig(name="srft", label_weights={"unnecessary": 0.5}))
    ds = datasets.load_from_disk(str(tmp_path / "soft" / "dataset"))
    assert "loss_weights" in ds.column_names and all(check_row(r) == [] for r in ds)
    assert {0.5, 1.0} <= {w for r in ds["loss_weights"] for w in r}
    assert soft["trained_tokens"] > 0
    rft = build(store, tmp_path / "rft", policy=PolicyConfig(name="rft"))
    unresolved = sum(t.outcome.resolved is not True for t in store[2])
    assert rft["drop_reasons"] == {"unresolved": unresolved} and rft["trajectories_dropped"] == unresolved
    assert rft["samples"] == len(store[2]) - unresolved


def test_truncation_is_counted(store, tmp_path):
    report = build(store, tmp_path, masks=MaskConfig(max_length=1500, truncation="keep-start"))
    assert report["truncated_tokens"] > 0 and report["longest_sample"] <= 1500
    assert report["trained_tokens_lost"] > 0
    dropped = build(store, tmp_path / "d", masks=MaskConfig(max_length=1500, truncation="drop"))
    assert dropped["samples_dropped"]["too_long"] > 0
    assert dropped["drop_reasons"].get("all_samples_dropped", 0) == dropped["samples_dropped"]["too_long"]


def test_template_errors_are_counted_not_fatal(store, tmp_path):
    report = build(store, tmp_path, tokenizer=str(TOKENIZER_DIR / "llama-3.1-instruct"))
    reasons = [r for r in report["drop_reasons"] if r.startswith("template_error")]
    assert reasons and "single tool-calls" in reasons[0]  # the synthetic parallel-call trajectory
    assert report["samples"] == len(store[2]) - 1
    assert any("refused to render" in w for w in report["warnings"])


def test_inputs_are_validated_first(store, tmp_path):
    with pytest.raises(BuildError) as err:
        run_build(tmp_path / "nowhere", tmp_path / "o", BuildConfig(tokenizer=str(tmp_path), exports=["nope"]))
    text = str(err.value)
    assert "no trajectory store" in text and "unknown export" in text and "--tokenizer" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"trajectory_id": store[2][0].id, "step": 999, "label": "good"}) + "\n")
    with pytest.raises(LabelFileError, match="bad.jsonl:1: step 999 out of range"):
        run_build(store[0], tmp_path / "o", BuildConfig(tokenizer=QWEN), annotations=bad)


def test_cli_build_and_audit(store, tmp_path):
    data, labels, _ = store
    srft = [str(Path(sys.executable).with_name("srft"))]  # the venv's console script
    run = subprocess.run([*srft, "build", str(data), "--tokenizer", QWEN, "--out", str(tmp_path / "b"),
                          "--annotations", str(labels), "--mask-label", "mistake", "--mask-label", "unnecessary",
                          "--label-on-resolved", "--export", "trl", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)  # exactly one JSON object on stdout
    for key in ("samples", "trajectories_used", "trajectories_dropped", "tokens", "trained_tokens",
                "masked_step_tokens", "truncated_tokens"):
        assert isinstance(out[key], int), key
    assert out["trained_tokens_by_label"].keys() == {"good"} and out["exports"]["trl"]
    html = tmp_path / "a.html"
    run = subprocess.run([*srft, "audit", str(tmp_path / "b"), "--sample", "0", "--html", str(html), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rep = json.loads(run.stdout)
    assert rep["rows_with_problems"] == 0 and rep["trained_tokens_by_label"]["good"] == out["trained_tokens"]
    bad = subprocess.run([*srft, "build", str(data), "--tokenizer", QWEN, "--out", str(tmp_path / "c"),
                          "--truncation", "sideways", "--json"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "truncation" in json.loads(bad.stdout)["error"]


def test_audit_shows_labels_and_escapes(store, tmp_path):
    build(store, tmp_path)
    synthetic = next(i for i, t in enumerate(sorted(store[2], key=lambda t: t.id)) if t.source.format == "test"
                     and t.steps[0].message_index == 2 and "<b>now</b>" in t.messages[1].content)
    report = audit(tmp_path, synthetic)
    runs = report["sample"]["runs"]
    text = "".join(r["text"] for r in runs)
    assert "<b>now</b>" in text and "😀" in text  # decoded exactly, multi-byte characters intact
    assert {r["label"] for r in runs if r["trained"]} == {"good", "unnecessary"}
    assert any(r["label"] == "mistake" and not r["trained"] for r in runs)
    page = html_page(report)
    assert "&lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page
    assert report["rows_with_problems"] == 0


def test_nothing_to_build_still_writes_a_loadable_dataset(tmp_path):
    import datasets

    write_trajectories(tmp_path / "s" / "trajectories.parquet", [tool_traj(resolved=False)])
    # the pipeline passes the config's parts instead of a BuildConfig
    report = run_build(tmp_path / "s", tmp_path / "o", tokenizer=QWEN, policy=PolicyConfig(name="rft"),
                       mask=MaskConfig(), exports=["trl"], on_progress=lambda *a: None)
    assert report["samples"] == 0 and report["drop_reasons"] == {"unresolved": 1}
    ds = datasets.load_from_disk(str(tmp_path / "o" / "dataset"))
    assert len(ds) == 0 and ds.column_names == COLUMNS
