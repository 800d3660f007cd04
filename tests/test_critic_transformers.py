"""The in-process transformers critic on the real SmolLM2-135M-Instruct (a plain HF folder, see conftest).

guided decoding forces valid JSON from the answer schema, so even this tiny model labels every step; free
decoding batches requests from concurrent trajectories and goes through the same parse / re-ask path.
"""

from __future__ import annotations

import pytest
from critic_support import simple_traj

from srft.critic.annotate import annotate_trajectories
from srft.model import LABELS

pytestmark = pytest.mark.slow
SMALL_PROMPT = {"context_tokens": 1024, "task_tokens": 32, "observation_tokens": 16, "digest_tokens": 32,
                "answer_tokens_per_step": 24}


def test_guided_decoding_labels_every_step_and_caches(smollm2_dir, tmp_path):
    trajs = [simple_traj(3, instance="g1"), simple_traj(2, instance="g2")]
    cfg = {"critic": {"name": "transformers", "options": {"model": str(smollm2_dir), "decoding": "guided",
                                                          "reason_tokens": 6, "threads": 1}},
           "prompt": {**SMALL_PROMPT, "max_window_steps": 2}, "concurrency": 2}
    result = annotate_trajectories(trajs, cfg, cache_path=tmp_path / "cache.sqlite")
    summary = result.summary
    assert summary["failed"] == 0 and summary["repaired"] == 0, [r.error for r in result.results]
    assert summary["windows"] == 3 and summary["calls"] == 3
    assert sorted((lab.trajectory_id, lab.step) for lab in result.labels) == sorted(
        [(trajs[0].id, n) for n in (1, 2, 3)] + [(trajs[1].id, n) for n in (1, 2)])
    assert all(lab.label in LABELS and lab.source == "transformers:smollm2" for lab in result.labels)
    assert summary["prompt_tokens"] > 100 and summary["completion_tokens"] > 0
    again = annotate_trajectories(trajs, cfg, cache_path=tmp_path / "cache.sqlite")
    assert again.summary["calls"] == 0 and again.summary["cached"] == 3
    assert again.labels == result.labels
    sampled = {**cfg, "samples": 2, "critic": {"name": "transformers",
                                               "options": {**cfg["critic"]["options"], "temperature": 0.7}}}
    with pytest.raises(ValueError, match="decodes guided"):  # guided is greedy: K samples would be one answer
        annotate_trajectories(trajs, sampled, cache_path=tmp_path / "cache.sqlite")


def test_free_decoding_batches_requests_and_parses_strictly(smollm2_dir):
    trajs = [simple_traj(1, instance=f"f{k}") for k in range(3)]
    cfg = {"critic": {"name": "transformers", "options": {"model": str(smollm2_dir), "batch_size": 3,
                                                          "max_new_tokens": 12, "threads": 1}},
           "prompt": SMALL_PROMPT, "concurrency": 3}
    result = annotate_trajectories(trajs, cfg)
    summary = result.summary
    assert summary["batches"]["transformers:smollm2"]["mean_size"] > 1  # concurrent requests share generate()
    # 12 new tokens cannot hold a valid answer: every trajectory is re-asked once, then fails with its raw text
    assert summary["failed"] == 3 and summary["calls"] == 6 and not result.labels
    for res in result.results:
        assert res.failure == "invalid_answer" and [r["attempt"] for r in res.raw] == [0, 1]
        assert "cut off at max_tokens" in res.raw[0]["error"] or "not valid JSON" in res.raw[0]["error"]
