"""The lab's mistakes are harmful to imitate, measured on students (not only on the teacher).

Two real students, trained through `srft lab`'s stages from the `small` preset's base model with the same
optimizer steps: `rft` (resolved trajectories) and `mistakes-only` (only the teacher's true mistake steps
trained, every other step in context with no loss). If imitating the mistakes did not lower success, masking
them could not help and the lab could not test SRFT. This is the slowest test of the suite (444 s measured on
2 quiet cores): the base model must learn the tools before any fine-tuning can show a difference.
"""

from __future__ import annotations

import pytest

from srft.lab.config import apply_sets, preset_config
from srft.run.experiment import run_lab

pytestmark = pytest.mark.slow


def test_a_student_trained_only_on_mistake_steps_does_worse(tmp_path):
    config = apply_sets(preset_config("small", seeds=[0], arms=["rft", "mistakes-only"], noise=[0.5]),
                        ["tasks.eval=60", "n_boot=2000"])
    report = run_lab(config, tmp_path / "lab")
    rows = {r["system"]: r for r in report["results"]}
    rft, harm = rows["rft"], rows["mistakes-only"]
    # The rft student has learned the task at all (otherwise "worse" means nothing)...
    assert rft["rate"] >= 0.3, rows
    # ...and the mistakes-only student is worse, with a paired-bootstrap CI that excludes zero.
    assert harm["diff_vs_rft"] < 0 and harm["diff_ci"][1] < 0, rows
    assert report["arms"]["mistakes-only"]["train"]["seed0"]["steps"] == config.finetune.max_steps
