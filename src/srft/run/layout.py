"""Where a node keeps its outputs inside its folder `RUN/<key>/` (DEVELOPERS.md "Run directory").

Node bodies (`srft.run.nodes`, `srft.run.lab`) write these paths and the readers of a finished run (the report page,
the lab's results) read them, so the layout is written down once. The node keys themselves come from
`srft.run.graph.pipeline_nodes`.
"""

from __future__ import annotations

from pathlib import Path

TRAJECTORIES = "trajectories"  # generate: trajectory files that ingest reads like any user's
GOLD_LABELS = "oracle_labels.jsonl"  # gold: the lab teacher's true step labels
NOISY_LABELS = "labels.jsonl"  # noisy/<policy>: gold labels with flipped mask decisions
ANNOTATIONS = "annotations.parquet"  # annotate: the critic's step labels (+ the same rows as .jsonl)
CRITIC_EVAL = "critic_eval.json"  # critic_eval: agreement with gold (+ confusion.png)
CONFUSION_PNG = "confusion.png"
TOKENIZER = "tokenizer"  # tokenizer: a Hugging Face tokenizer folder
MODEL = "model"  # student, train/<policy>/seed<s>: a Hugging Face model folder (train_report.json inside)
BUILD_REPORT = "build_report.json"  # build/<policy>: next to dataset/
OUTCOMES = "outcomes"  # evaluate/...: outcomes/<system>.<run>.json, one SWE-bench run summary
EPISODES = "episodes.jsonl"  # evaluate/... of the lab: the student's episodes as OpenAI chat rows
COMPARE = "compare.json"  # compare: + compare.md, forest.png
FOREST_PNG = "forest.png"
REPORT = "report.html"  # report


def train_report(folder: Path) -> Path:
    return folder / MODEL / "train_report.json"


def run_summary(folder: Path, system: str, run: str) -> Path:
    """evaluate/<system>/<run>: the run summary compare reads (the file name carries system and run)."""
    return folder / OUTCOMES / f"{system}.{run}.json"


def run_summaries(folder: Path) -> dict[str, Path]:
    """system -> run summary of one evaluate folder (a system name may hold dots: `srft-q0.25.seed0.json`)."""
    return {p.name.rsplit(".", 2)[0]: p for p in sorted((folder / OUTCOMES).glob("*.json"))}
