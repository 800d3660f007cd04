"""Every command, given bad input, fails the same way: exit 2 (1 for failures found while working), one
`error:` line on stderr naming the input and the fix, no traceback, and under `--json` exactly one JSON object
with an `error` key on stdout (nothing at all on stdout without it). Usage errors of the parser included.

The table drives the real app through typer's CliRunner. Nothing here trains or labels: every error must be
caught before heavy work (the probe of an unreachable critic endpoint must answer in seconds).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
from conftest import ROOT, TOKENIZER_DIR, need_shared
from typer.testing import CliRunner

from srft.cli import app

FIXTURE = ROOT / "tests" / "fixtures" / "formats" / "swe_smith.jsonl"
RECIPE = ROOT / "tests" / "fixtures" / "pipeline" / "tiny.yaml"
QWEN = TOKENIZER_DIR / "qwen2.5-coder-instruct"
LLAMA = TOKENIZER_DIR / "llama-3.1-instruct"


def invoke(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args])


def closed_port() -> int:
    with socket.socket() as s:  # bound, then released: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """A store, a plain file, a gold label file, a labels database and a recipe; no ../shared needed."""
    from srft.view.db import LabelsDB

    tmp = tmp_path_factory.mktemp("cli-errors")
    res = invoke(["ingest", FIXTURE, "--out", tmp / "store", "--json"])
    assert res.exit_code == 0, res.output
    (tmp / "file.txt").write_text("not a folder\n")
    (tmp / "runs.csv").write_text("instance_id,a\nx__y-1,1\nx__y-2,0\n")
    gold = tmp / "gold.jsonl"
    gold.write_text(json.dumps({"trajectory_id": _first_id(tmp / "store"), "step": 1, "label": "good"}) + "\n")
    LabelsDB(tmp / "labels.db", create=True)
    return {"tmp": str(tmp), "store": str(tmp / "store"), "file": str(tmp / "file.txt"), "gold": str(gold),
            "db": str(tmp / "labels.db"), "runs": str(tmp / "runs.csv"), "recipe": str(RECIPE), "fixture": str(FIXTURE), "qwen": str(QWEN),
            "llama": str(LLAMA), "port": str(closed_port())}


def _first_id(store: Path) -> str:
    from srft.io import iter_trajectories

    return next(iter(iter_trajectories(store))).id


@pytest.fixture(scope="module")
def built(env) -> dict[str, str]:
    """A real build (Qwen2.5 tokenizer), a copy whose step_labels column was nulled by hand, and a tiny student
    whose 64-token vocabulary is far smaller than the build's token ids."""
    import datasets

    from srft.train.models import InitConfig, init_model, make_word_tokenizer

    need_shared(QWEN)
    tmp = Path(env["tmp"])
    res = invoke(["build", env["store"], "--tokenizer", QWEN, "--out", tmp / "build", "--json"])
    assert res.exit_code == 0, res.output
    nulled = tmp / "nulled"
    shutil.copytree(tmp / "build", nulled, ignore=shutil.ignore_patterns("dataset"))
    ds = datasets.load_from_disk(str(tmp / "build" / "dataset"))
    ds.map(lambda r: {"step_labels": None}).save_to_disk(str(nulled / "dataset"))
    init_model(make_word_tokenizer(tmp / "word-tok", 60), tmp / "tiny", InitConfig())
    return {"build": str(tmp / "build"), "nulled": str(nulled), "tiny": str(tmp / "tiny")}


# (case id, argv, --json?, exit code, text the error line must hold). `{x}` fills from the fixtures; `{out}` is a
# fresh folder per case. Ids ending in "+build" need the real build (and ../shared).
CASES = [
    # usage errors from the parser
    ("usage-unknown-command", ["buidl"], True, 2, "No such command 'buidl'"),
    ("usage-missing-out", ["ingest", "{fixture}"], True, 2, "Missing option '--out'"),
    ("usage-not-a-number", ["annotate", "{store}", "--out", "{out}", "--concurrency", "hot"], True, 2,
     "Invalid value for '--concurrency'"),
    ("usage-unknown-option", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}", "--polcy", "sft"],
     False, 2, "No such option: --polcy"),
    ("usage-view-no-json", ["view", "{store}", "--json"], True, 2, "No such option: --json"),
    ("usage-models-init", ["models", "init", "--out", "{out}"], True, 2, "Missing option '--tokenizer'"),
    # ingest
    ("ingest-out-is-a-file", ["ingest", "{fixture}", "--out", "{file}"], True, 2, "exists and is not a folder"),
    ("ingest-out-uncreatable", ["ingest", "{fixture}", "--out", "/proc/srft-x"], False, 2, "cannot create"),
    ("ingest-no-input-exists", ["ingest", "{tmp}/no.traj", "{tmp}/nope/", "--out", "{out}"], True, 2,
     "no such file or folder"),
    ("ingest-unknown-format", ["ingest", "{fixture}", "--out", "{out}", "--format", "nosuch"], True, 2, "known:"),
    ("ingest-missing-exclude", ["ingest", "{fixture}", "--out", "{out}", "--exclude-instances", "{tmp}/no.txt"],
     True, 2, "--exclude-instances"),
    ("ingest-missing-outcomes", ["ingest", "{fixture}", "--out", "{out}", "--outcomes", "{tmp}/no.json"], False, 2,
     "no.json"),
    # annotate
    ("annotate-unknown-critic", ["annotate", "{store}", "--out", "{out}", "--critic", "nosuch"], True, 2,
     "unknown critic 'nosuch'"),
    ("annotate-option-type", ["annotate", "{store}", "--out", "{out}", "--critic", "openai", "-o", "model=m",
                              "-o", "temperature=hot"], True, 2, "temperature: Input should be a valid number"),
    ("annotate-option-typo", ["annotate", "{store}", "--out", "{out}", "--critic", "openai", "-o", "model=m",
                              "-o", "temprature=0"], False, 2, "did you mean 'temperature'?"),
    ("annotate-option-other-critic", ["annotate", "{store}", "--out", "{out}", "-o", "base_url=http://x"], True, 2,
     "critic 'heuristic' options: base_url: unknown key"),
    ("annotate-option-no-equals", ["annotate", "{store}", "--out", "{out}", "-o", "rules"], True, 2,
     "expected KEY=VALUE"),
    ("annotate-member-without-ensemble", ["annotate", "{store}", "--out", "{out}", "--member", "heuristic"], True, 2,
     "--member applies only to --critic ensemble"),
    ("annotate-missing-tokenizer", ["annotate", "{store}", "--out", "{out}", "--critic", "openai", "-o", "model=m",
                                    "--tokenizer", "{tmp}/no-tok"], True, 2, "--tokenizer"),
    ("annotate-unreachable-endpoint", ["annotate", "{store}", "--out", "{out}", "--critic", "openai", "-o",
                                       "model=m", "-o", "base_url=http://127.0.0.1:{port}/v1"], True, 2,
     "cannot connect to 127.0.0.1"),
    ("annotate-missing-store", ["annotate", "{tmp}/no-store", "--out", "{out}"], True, 2, "no-store"),
    ("annotate-missing-config", ["annotate", "{store}", "--out", "{out}", "--config", "{tmp}/no.yaml"], True, 2,
     "no.yaml"),
    ("annotate-bad-only", ["annotate", "{store}", "--out", "{out}", "--only", "sometimes"], False, 2, "--only"),
    # critic-eval
    ("critic-eval-missing-gold", ["critic-eval", "--gold", "{tmp}/no-gold.jsonl", "--pred", "{gold}"], True, 2,
     "no-gold.jsonl"),
    ("critic-eval-bad-mask", ["critic-eval", "--gold", "{gold}", "--pred", "{gold}", "--mask-labels", "bogus"],
     True, 2, "mask"),
    ("critic-eval-bad-confidence", ["critic-eval", "--gold", "{gold}", "--pred", "{gold}", "--confidence", "2"],
     False, 2, "--confidence"),
    # view (no --json: it serves pages) and labels export
    ("view-unknown-policy", ["view", "{store}", "--policy", "srtf", "--tokenizer", "{qwen}"], False, 2,
     "--policy: unknown policy 'srtf'"),
    ("view-missing-tokenizer", ["view", "{store}", "--tokenizer", "{tmp}/no-tok"], False, 2, "no-tok"),
    ("view-bad-port", ["view", "{store}", "--port", "0"], False, 2, "--port"),
    ("view-missing-store", ["view", "{tmp}/no-store"], False, 2, "no trajectory store"),
    ("view-bad-mask-label", ["view", "{store}", "--mask-labels", "bogus"], False, 2, "mask_labels"),
    ("labels-export-missing-db", ["labels", "export", "{tmp}/no.db", "--out", "{out}.jsonl"], True, 2,
     "no such labels database"),
    ("labels-export-bad-conflict", ["labels", "export", "{db}", "--out", "{out}.jsonl", "--on-conflict", "maybe"],
     True, 2, "maybe"),
    # build
    ("build-policy-typo", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}", "--policy", "srtf"], True,
     2, "unknown policy 'srtf'"),
    ("build-policy-missing-module", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}", "--policy",
                                     "my_pkg.mod:fn"], True, 2, "cannot load policy 'my_pkg.mod:fn'"),
    ("build-label-weight-word", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}", "--label-weight",
                                 "unnecessary=half"], True, 2, "label_weights.unnecessary"),
    ("build-label-weight-no-equals", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}",
                                      "--label-weight", "unnecessary"], False, 2, "expected KEY=VALUE"),
    ("build-missing-tokenizer", ["build", "{store}", "--tokenizer", "{tmp}/no-tok", "--out", "{out}"], True, 2,
     "--tokenizer"),
    ("build-bad-truncation", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}", "--truncation",
                              "sideways"], True, 2, "truncation"),
    ("build-unknown-export", ["build", "{store}", "--tokenizer", "{qwen}", "--out", "{out}", "--export", "nosuch"],
     True, 2, "unknown export"),
    ("build-missing-store", ["build", "{tmp}/no-store", "--tokenizer", "{qwen}", "--out", "{out}"], False, 2,
     "no trajectory store"),
    # audit
    ("audit-missing", ["audit", "{tmp}/no-build"], True, 2, "no build dataset"),
    ("audit-sample-range+build", ["audit", "{build}", "--sample", "99"], True, 2, "--sample 99"),
    ("audit-other-tokenizer+build", ["audit", "{build}", "--tokenizer", "{llama}"], True, 2,
     "not the tokenizer the dataset was built with"),
    ("audit-missing-tokenizer+build", ["audit", "{build}", "--tokenizer", "{tmp}/no-tok"], False, 2,
     "--tokenizer"),
    # models
    ("models-init-arch", ["models", "init", "--tokenizer", "{qwen}", "--out", "{out}", "--arch", "gpt2"], True, 2,
     "--arch: Input should be 'llama' or 'qwen2'"),
    ("models-init-set-no-equals", ["models", "init", "--tokenizer", "{qwen}", "--out", "{out}", "--set", "layers"],
     True, 2, "expected KEY=VALUE"),
    ("models-prepare-unknown", ["models", "prepare", "gpt5"], True, 2, "known: smollm2"),
    # train
    ("train-max-steps-zero+build", ["train", "{build}", "--model", "{tiny}", "--out", "{out}", "--max-steps", "0"],
     True, 2, "--max-steps: Input should be greater than or equal to 1"),
    ("train-set-typo+build", ["train", "{build}", "--model", "{tiny}", "--out", "{out}", "--set", "lora_rnak=4"],
     True, 2, "did you mean 'lora_r'?"),
    ("train-lr-word", ["train", "{store}", "--out", "{out}", "--lr", "fast"], True, 2, "Invalid value for '--lr'"),
    ("train-full-and-lora", ["train", "{store}", "--model", "m", "--out", "{out}", "--full", "--lora", "8"], True,
     2, "--full and --lora exclude each other"),
    ("train-missing-model+build", ["train", "{build}", "--model", "{tmp}/no-model", "--out", "{out}"], False, 2,
     "not a model directory"),
    ("train-vocab-too-small+build", ["train", "{build}", "--model", "{tiny}", "--out", "{out}"], True, 2,
     "its vocabulary has 64 tokens but the dataset holds token id"),
    ("train-missing-config", ["train", "{store}", "--model", "m", "--out", "{out}", "--config", "{tmp}/no.yaml"],
     True, 2, "no.yaml"),
    # compare
    ("compare-system-no-equals", ["compare", "--system", "no-equals-sign"], True, 2, "NAME=PATH"),
    ("compare-missing-file", ["compare", "--system", "x={tmp}/no-run.json"], True, 2, "no-run.json"),
    ("compare-bad-cluster", ["compare", "{file}", "--cluster", "folder"], True, 2, "--cluster: Input should be"),
    ("compare-bad-n-boot", ["compare", "{file}", "--n-boot", "0"], False, 2, "--n-boot"),
    ("compare-one-cluster", ["compare", "--system", "x={runs}:a", "--cluster", "repo"], True, 2,
     "needs at least 2 repositories"),
    ("compare-missing-instances", ["compare", "--system", "x={runs}:a", "--instances", "{tmp}/no-ids.txt"], True, 2,
     "no-ids.txt"),
    # run, lab
    ("run-missing-recipe", ["run", "{tmp}/no-recipe.yaml", "--dry-run"], True, 2, "no-recipe.yaml"),
    ("run-override-typo", ["run", "{recipe}", "train.max_stepz=3", "--dry-run", "--out", "{out}"], True, 2,
     "max_stepz"),
    ("run-override-no-equals", ["run", "{recipe}", "train.max_steps", "--dry-run", "--out", "{out}"], False, 2,
     "expected KEY=VALUE"),
    ("run-unknown-stage", ["run", "{recipe}", "--from", "trian", "--dry-run", "--out", "{out}"], True, 2,
     "--from trian"),
    ("lab-set-typo", ["lab", "--out", "{out}", "--set", "finetune.max_stepz=3"], True, 2,
     "finetune.max_stepz: unknown key; did you mean 'max_steps'?"),
    ("lab-unknown-preset", ["lab", "--preset", "huge", "--out", "{out}"], True, 2, "unknown preset 'huge'"),
    ("lab-bad-seeds", ["lab", "--seeds", "a,b", "--out", "{out}"], False, 2, "seeds"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(case, env, request):
    name, argv, as_json, code, text = case
    values = dict(env, out=str(Path(env["tmp"]) / f"out-{name}"))
    if name.endswith("+build"):
        values.update(request.getfixturevalue("built"))
    elif any("{qwen}" in a or "{llama}" in a for a in argv):
        need_shared(QWEN)
    args = [a.format(**values) for a in argv] + (["--json"] if as_json and "--json" not in argv else [])
    start = time.monotonic()
    res = invoke(args)
    assert time.monotonic() - start < 30, "bad input must be caught before heavy work"
    assert res.exit_code == code, f"exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr and (res.exception is None or isinstance(res.exception, SystemExit))
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0], res.stderr
    if as_json:
        lines = res.stdout.strip().splitlines()
        assert len(lines) == 1, f"stdout must hold exactly one JSON object: {res.stdout!r}"
        obj = json.loads(lines[0])
        assert text in obj["error"] and obj["error"] == errors[0].removeprefix("error: ")
        assert "pydantic.dev" not in lines[0]
    else:
        assert res.stdout.strip() == "", f"nothing on stdout without --json: {res.stdout!r}"


def test_audit_of_a_dataset_with_null_step_labels_does_not_crash(built):
    res = invoke(["audit", built["nulled"], "--json"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["rows_with_problems"] == 0 and set(report["trained_tokens_by_label"]) == {"unlabelled"}


def test_build_records_the_tokenizer_it_used(built):
    vocab = json.loads((Path(built["build"]) / "build_report.json").read_text())["vocab"]
    assert vocab["tokenizer"]["vocab_size"] == 151665 and vocab["tokenizer"]["special_tokens"]["eos_token"] == \
        "<|im_end|>"
    assert 0 < vocab["max_token_id"] < 151665
    same = invoke(["audit", built["build"], "--tokenizer", QWEN, "--json"])  # the build's own tokenizer passes
    assert same.exit_code == 0 and json.loads(same.stdout)["sample"]["decoded"], same.stderr


def test_debug_shows_the_traceback(env):
    res = invoke(["--debug", "annotate", env["store"], "--out", str(Path(env["tmp"]) / "dbg"), "--critic", "nosuch"])
    assert res.exit_code != 0 and res.exception is not None and not isinstance(res.exception, SystemExit)
    res = invoke(["annotate", env["store"], "--out", str(Path(env["tmp"]) / "dbg"), "--critic", "nosuch", "--debug"])
    assert "unknown critic" in str(res.exception)
