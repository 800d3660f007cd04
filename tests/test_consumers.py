"""Every export trains exactly srft's tokens in its own trainer: each trainer's own data code (TRL in srft's venv,
the others in their pinned venvs under .venv-consumers/, built by `make consumers`) runs on srft's exports of real
trajectories from ../shared, with two tokenizer families (Qwen2.5-Coder's ChatML template and Llama-3.1's), and
its input ids and trained positions must equal srft's dataset token by token. The settings that would ignore
srft's mask (a trainer's stock dataset class, another model's tokenizer, truncation) must fail loudly.

Runs each consumer once, in one subprocess over both tokenizers, the four side by side. Without a consumer's venv its test skips with
the reason (fails under CI). Measured on the project machine (2 cores): see the `slow` marks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from srft.dataset.build import BuildConfig, run_build
from srft.dataset.exports import EXPORTERS
from srft.dataset.masks import IGNORE_INDEX
from srft.io import write_trajectories
from srft.labels import StepLabel, write_labels
from srft.policy import PolicyConfig

from conftest import ROOT, TOKENIZER_DIR, need_shared
from test_masks import real_trajs  # noqa: F401 (fixture)

FAMILIES = {"qwen": "qwen2.5-coder-instruct", "llama": "llama-3.1-instruct"}
CONSUMERS = ("axolotl", "llamafactory", "torchtune", "verl")
VENVS = ROOT / ".venv-consumers"
SCRIPTS = ROOT / "tests" / "consumers"


# -- student model folders: what a user passes as --tokenizer ---------------------------------------------------

def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the characters of tokenizer.json's vocab -> the bytes they stand for."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def student_dir(tokenizer: Path, out: Path) -> dict:
    """A model folder as trainers expect it: the tokenizer files, a tiny config.json (no weights: only data code
    runs), and the tokenizer files torchtune's builders read, written from tokenizer.json. Returns the folder and
    torchtune's `tokenizer:` config section for it."""
    import base64

    out.mkdir(parents=True)
    for f in tokenizer.iterdir():
        if f.is_file() and f.suffix in (".json", ".jinja"):
            shutil.copy(f, out / f.name)
    spec = json.loads((tokenizer / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    llama = any(t["content"] == "<|begin_of_text|>" for t in spec["added_tokens"])
    size = max(max(vocab.values()), *(t["id"] for t in spec["added_tokens"])) + 1
    config = {"architectures": ["LlamaForCausalLM" if llama else "Qwen2ForCausalLM"],
              "model_type": "llama" if llama else "qwen2", "vocab_size": size, "hidden_size": 16,
              "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 131072}
    (out / "config.json").write_text(json.dumps(config))
    if llama:  # torchtune's Llama-3 tokenizer reads a tiktoken file: base64 bytes and rank (= id) per line
        decode = _byte_decoder()
        lines = [f"{base64.b64encode(bytes(decode[c] for c in token)).decode()} {rank}"
                 for token, rank in sorted(vocab.items(), key=lambda kv: kv[1])]
        (out / "tokenizer.model").write_text("\n".join(lines) + "\n")
        tt = {"_component_": "torchtune.models.llama3.llama3_tokenizer", "path": str(out / "tokenizer.model")}
    else:  # Qwen's: vocab.json + merges.txt
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
        (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tt = {"_component_": "torchtune.models.qwen2_5.qwen2_5_tokenizer", "path": str(out / "vocab.json"),
              "merges_file": str(out / "merges.txt")}
    return {"dir": out, "torchtune": tt}


# -- srft's side: real trajectories, mistakes on the first, middle and last step, every export ------------------

@pytest.fixture(scope="module")
def builds(real_trajs, tmp_path_factory) -> dict:  # noqa: F811
    """family -> {"out": build dir, "dataset": the built dataset, "student": student_dir(...), "report"}."""
    import datasets

    need_shared(TOKENIZER_DIR)
    root = tmp_path_factory.mktemp("consumers")
    store = root / "store"
    write_trajectories(store / "trajectories.parquet", real_trajs)
    labels = [StepLabel(trajectory_id=t.id, step=s.number, source="oracle",
                        label="mistake" if s.number in (1, (len(t.steps) + 1) // 2, len(t.steps)) else "good")
              for t in real_trajs for s in t.steps]
    write_labels(store / "labels.jsonl", labels)
    out = {}
    for family, name in FAMILIES.items():
        student = student_dir(TOKENIZER_DIR / name, root / "models" / family)
        config = BuildConfig(tokenizer=str(student["dir"]), exports=sorted(EXPORTERS),
                             policy=PolicyConfig(name="srft", label_on_resolved=True))
        report = run_build(store, root / family, config, annotations=store / "labels.jsonl")
        out[family] = {"out": root / family, "report": report, "student": student,
                       "dataset": datasets.load_from_disk(str(root / family / "dataset"))}
    return out


def test_the_samples_hold_the_hard_cases(builds, real_trajs):  # noqa: F811
    """What makes consumers differ is in the data: tool-calling turns with text, tool results followed by an
    assistant turn, masked first and last steps, a system prompt with tools, several rows per family."""
    trajs = {t.id: t for t in real_trajs}
    for family, built in builds.items():
        ds = built["dataset"]
        assert len(ds) >= 5 and built["report"]["masked_step_tokens"] > 0, family
        trained_text_calls = masked_first = masked_last = 0
        for tid, spans in zip(ds["trajectory_id"], ds["step_spans"]):
            traj = trajs[tid]
            weight = {s["step"]: s["weight"] for s in spans}
            masked_first += weight.get(1) == 0
            masked_last += weight.get(len(traj.steps)) == 0
            trained_text_calls += sum(1 for s in traj.steps if weight.get(s.number, 0) > 0 and
                                      traj.messages[s.message_index].tool_calls and
                                      traj.messages[s.message_index].content.strip())
        used = [trajs[t] for t in set(ds["trajectory_id"])]
        assert masked_first and masked_last and trained_text_calls, family
        assert any(t.tools for t in used), family
        assert any(a.role == "tool" and b.role == "assistant" for t in used for a, b in zip(t.messages, t.messages[1:]))


def assert_same_tokens(rows: list[dict], ds, what: str, ordered: bool = True) -> None:
    """The consumer's per-sample ids and trained positions equal srft's, token by token."""
    want = [(ids, [int(x != IGNORE_INDEX) for x in labels]) for ids, labels in zip(ds["input_ids"], ds["labels"])]
    got = [(r["input_ids"], [int(bool(x)) for x in r["trained"]]) for r in rows]
    if not ordered:
        want, got = sorted(want), sorted(got)
    assert want and len(got) == len(want), f"{what}: {len(got)} samples, srft built {len(want)}"
    for i, ((ids, mask), (want_ids, want_mask)) in enumerate(zip(got, want)):
        assert len(mask) == len(ids), f"{what}: sample {i}: {len(mask)} mask positions for {len(ids)} ids"
        if ids != want_ids:
            at = next((k for k, (a, b) in enumerate(zip(ids, want_ids)) if a != b), min(len(ids), len(want_ids)))
            pytest.fail(f"{what}: sample {i}: ids differ from srft's at token {at} ({len(ids)} vs {len(want_ids)})")
        extra = sum(a and not b for a, b in zip(mask, want_mask))
        missing = sum(b and not a for a, b in zip(mask, want_mask))
        assert (extra, missing) == (0, 0), f"{what}: sample {i}: {extra} extra and {missing} missing trained tokens"


# -- TRL (srft's own venv) -------------------------------------------------------------------------------------

def trl_rows(export: Path, tmp: Path, **changes) -> list[dict]:
    """`trl sft --config trl.yaml` up to the first batch: TRL's own CLI parser, its dataset loader and SFTTrainer's
    preparation and collator (the model is a tiny random one; `trl sft` would load model_name_or_path)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer, get_dataset
    from trl.scripts.sft import make_parser

    argv = ["--config", str(export / "trl.yaml"), "--output_dir", str(tmp / "o"), "--report_to", "none",
            "--use_cpu", "true", *[x for k, v in changes.items() for x in (f"--{k}", str(v))]]
    script, args, model_args, data_args = make_parser().parse_args_and_config(argv)[:4]
    tok = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_args.model_name_or_path))
    dataset = get_dataset(data_args)[script.dataset_train_split]
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    rows = []
    for item in trainer.train_dataset:
        batch = trainer.data_collator([item])
        rows.append({"input_ids": batch["input_ids"][0].tolist(), "trained": (batch["labels"][0] != IGNORE_INDEX).tolist()})
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_trl_trains_exactly_srfts_tokens(builds, family, tmp_path):
    built = builds[family]
    export = built["out"] / "exports" / "trl"
    assert_same_tokens(trl_rows(export, tmp_path), built["dataset"], f"trl/{family}")
    assert_same_tokens(trl_rows(export, tmp_path / "c", completion_only_loss="true"), built["dataset"],
                       f"trl/{family} + completion_only_loss")
    with pytest.raises(ValueError, match="not conversational"):  # the setting that would re-derive labels refuses
        trl_rows(export, tmp_path, assistant_only_loss="true")
    # TRL's own default max_length (1024) cuts these samples and drops those left with nothing to train: the
    # written max_length is what keeps them whole
    assert max(len(ids) for ids in built["dataset"]["input_ids"]) > 1024
    cut = trl_rows(export, tmp_path / "d", max_length=1024)
    assert len(cut) < len(built["dataset"]) and all(len(r["input_ids"]) <= 1024 for r in cut)


# -- the other consumers, each in its own venv ------------------------------------------------------------------

@pytest.fixture(scope="module")
def consumer_runs(builds, tmp_path_factory):
    """name -> that consumer's output for both tokenizers. Every built consumer starts at the first use, each in
    one subprocess, all at once: most of their time is imports and waiting, so on 2 cores they overlap."""
    started = {name: _start(name, builds, tmp_path_factory.mktemp(f"run-{name}"))
               for name in CONSUMERS if (VENVS / name / ".stamp").is_file()}
    done: dict[str, dict] = {}

    def run(name: str) -> dict:
        consumer_python(name)  # skips (or fails under CI) when the venv is missing
        if name not in done:
            done[name] = _finish(name, *started[name])
        return done[name]

    yield run
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()


def consumer_python(name: str) -> Path:
    venv = VENVS / name
    if not (venv / ".stamp").is_file():
        message = f"{venv} is not built: run `make consumers` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the consumer tests")
        pytest.skip(message)
    return venv / "bin" / "python"


def _start(name: str, builds: dict, tmp: Path) -> tuple[subprocess.Popen, Path]:
    other = {"qwen": "llama", "llama": "qwen"}
    cases = [{"name": family, "export": str(b["out"] / "exports" / name), "model": str(b["student"]["dir"]),
              "other_model": str(builds[other[family]]["student"]["dir"]), "tokenizer": b["student"]["torchtune"],
              "other_tokenizer": builds[other[family]]["student"]["torchtune"]} for family, b in builds.items()]
    (tmp / "job.json").write_text(json.dumps({"cases": cases}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf"), TOKENIZERS_PARALLELISM="false",
               AXOLOTL_DO_NOT_TRACK="1", DO_NOT_TRACK="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    command = [str(VENVS / name / "bin" / "python"), str(SCRIPTS / f"run_{name}.py"), str(tmp / "job.json"),
               str(tmp / "out.json")]
    with open(tmp / "log.txt", "w") as log:
        return subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT), tmp


def _finish(name: str, proc: subprocess.Popen, tmp: Path) -> dict:
    code = proc.wait(timeout=900)
    log = (tmp / "log.txt").read_text(errors="replace")[-3000:]
    assert code == 0 and (tmp / "out.json").is_file(), f"{name} exited {code}:\n{log}"
    result = json.loads((tmp / "out.json").read_text())
    for family, case in result["cases"].items():
        assert "error" not in case, f"{name}/{family}: {case['error']}"
    return result


# The failures each consumer must raise for the settings that would not train srft's mask (check -> text in it).
MUST_FAIL = {
    "verl": {"stock_dataset_class": "KeyError: 'messages'", "other_tokenizer": "is not the one srft built",
             "truncating_max_length": "longer than data.max_length"},
    "torchtune": {"stock_chat_dataset": "KeyError: 'messages'", "other_tokenizer": "is not the one srft built",
                  "pack_smaller_than_a_sample": "tokenizer.max_seq_len="},
    "llamafactory": {"without_tokenized_path": "dataset_info.json"},
    "axolotl": {},
}
PINNED = {"axolotl": "0.19.0", "llamafactory": "0.9.5", "torchtune": "0.6.1", "verl": "0.9.1"}


def unbuilt(name: str):
    """Skip before any fixture runs when the venv is missing, except under CI (consumer_python then fails)."""
    missing = not (VENVS / name / ".stamp").is_file() and not os.environ.get("CI")
    return pytest.mark.skipif(missing, reason=f"{VENVS / name} is not built: run `make consumers` (make test does)")


@pytest.mark.slow  # the four consumer subprocesses (~60 s CPU together) run side by side on the first of these
@pytest.mark.parametrize("name", [pytest.param(name, marks=unbuilt(name)) for name in CONSUMERS])
def test_consumer_trains_exactly_srfts_tokens(consumer_runs, builds, name):
    result = consumer_runs(name)
    assert result["versions"][name] == PINNED[name]
    for family, built in builds.items():
        case, ds = result["cases"][family], built["dataset"]
        # axolotl shuffles the prepared dataset; the others keep srft's row order
        assert_same_tokens(case["rows"], ds, f"{name}/{family}", ordered=name != "axolotl")
        for check, text in MUST_FAIL[name].items():
            assert case["checks"][check] is not None, f"{name}/{family}: {check} did not fail"
            assert text in case["checks"][check], f"{name}/{family}: {check}: {case['checks'][check]}"
        if name == "axolotl":  # chat-template settings (type, train_on_inputs, roles) leave the labels alone
            assert_same_tokens(case["rows_chat_template_settings"], ds, f"axolotl/{family} + chat_template",
                               ordered=False)
        if name == "llamafactory":  # cutoff_len / mask_history apply to its own preprocessing, not to ours
            assert_same_tokens(case["rows_cutoff_mask_history"], ds, f"llamafactory/{family} + cutoff_len 16")
        if name == "torchtune":
            assert_packed(case["packed"], ds, f"torchtune/{family} packed")
            assert_same_tokens(case["rows_short_max_seq_len"], ds, f"torchtune/{family} max_seq_len < longest")


def assert_packed(packs: list[dict], ds, what: str) -> None:
    """Packs hold srft's samples back to back, in order, each with its trained positions; the rest is padding."""
    want = [(ids, [int(x != IGNORE_INDEX) for x in labels]) for ids, labels in zip(ds["input_ids"], ds["labels"])]
    k = 0
    for p, pack in enumerate(packs):
        pos = 0
        for length in pack["seq_lens"]:
            ids, trained = pack["input_ids"][pos:pos + length], pack["trained"][pos:pos + length]
            assert len(trained) == len(ids) == length, f"{what}: pack {p} at {pos}: a short mask or ids"
            if k < len(want) and ids == want[k][0]:
                assert trained == want[k][1], f"{what}: sample {k} (pack {p}) trained positions differ from srft's"
                k += 1
            else:  # only the padding at the end of a pack may be something else
                assert pos + length == len(pack["input_ids"]) and not any(trained), f"{what}: pack {p} at {pos}"
            pos += length
    assert want and k == len(want), f"{what}: {k} of {len(want)} samples found in the packs"


def test_scripts_never_import_srft():
    """The consumer scripts run in venvs without srft: importing it would test srft, not the consumer."""
    for script in SCRIPTS.glob("*.py"):
        assert "import srft" not in script.read_text() and "from srft" not in script.read_text(), script.name
