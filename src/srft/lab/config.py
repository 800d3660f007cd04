"""The lab experiment's configuration, its presets (tiny | small | paper) and its arms (one student per
policy and label source). Pure: no torch, no I/O.

Budget rule: every fine-tuned arm gets the same number of optimizer steps with the same number of samples per
step (equal compute, equal samples seen), from the same base model, per training seed. Equal epochs would give
sft/srft about twice the updates of rft (they keep the unresolved trajectories rft drops) and mix "more useful
data" with "more compute"; equal steps asks the stricter question: per unit of training, which data is better?
rft repeats its smaller set more often instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srft.lab.teacher import TeacherConfig
from srft.policy import PolicyConfig

LabelSource = Literal["none", "oracle", "critic", "flip"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCounts(_Model):
    """How many tasks of each split, and their difficulty mix."""

    train: int = Field(400, ge=1, description="teacher trajectories (one per training task)")
    eval: int = Field(100, ge=1, description="held-out tasks every student is scored on")
    pretrain: int = Field(2000, ge=1, description="instruction episodes the base model is pretrained on")
    mix: dict[str, float] = Field({"easy": 1.0, "medium": 1.0, "hard": 2.0},
                                  description="difficulty weights (easy | medium | hard), same for every split")


class StudentConfig(_Model):
    """The random-init student architecture (srft.train.models.init_model)."""

    arch: Literal["llama", "qwen2"] = Field("llama", description="architecture family")
    preset: Literal["tiny", "small", "base"] = Field("small", description="named size in srft.train.models.PRESETS")
    overrides: dict[str, int] = Field(default_factory=dict, description="config fields to change, e.g. layers")
    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary trained on the lab's text")


class Schedule(_Model):
    """One training run's optimiser budget (srft.train.TrainConfig fields)."""

    max_steps: int = Field(ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="samples per optimizer step")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (cosine decay)")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    scheduler: Literal["cosine", "constant", "linear"] = Field("cosine", description="learning-rate schedule")


class Arm(_Model):
    """One student recipe: a policy and where its step labels come from."""

    name: str = Field(description="column name in outcomes.csv and the results table")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="srft.policy configuration")
    labels: LabelSource = Field("none", description="none | oracle | critic (heuristic) | flip (oracle at rate q)")
    q: float | None = Field(None, ge=0, le=1, description="flip rate of the oracle labels (labels=flip)")
    votes: Literal["informative", "uninformative"] | None = Field(
        None, description="labels=flip: simulated votes whose confidence is (or is not) low where labels are wrong")
    role: str = Field("", description="what the arm shows, for the report")


class LabConfig(_Model):
    """Everything `srft lab` runs."""

    preset: str = Field("custom", description="the preset this config came from")
    seed: int = Field(0, description="task, teacher and label-flip seed")
    tasks: TaskCounts = Field(default_factory=TaskCounts, description="task counts and difficulty mix")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="noise rates of the teacher")
    student: StudentConfig = Field(default_factory=StudentConfig, description="student architecture")
    induction: Schedule = Field(Schedule(max_steps=150, batch_size=32, lr=1e-3, warmup_ratio=0, scheduler="constant"),
                                description="the base model's induction warm-up on repeated random sequences")
    pretrain: Schedule = Field(Schedule(max_steps=600, batch_size=16, lr=2e-3, scheduler="constant"),
                               description="base-model pretraining on instruction episodes (every token)")
    finetune: Schedule = Field(Schedule(max_steps=150, batch_size=16, lr=1e-3),
                               description="each arm's fine-tuning from the base (equal steps for every arm)")
    seeds: list[int] = Field([0, 1], min_length=1, description="training seeds per arm")
    noise: list[float] = Field([0.1, 0.25, 0.5], description="oracle label flip rates q for the critic-noise sweep")
    confidence_q: float = Field(0.25, gt=0, lt=0.5, description="error rate of the critics of srft-confidence")
    arms: list[str] = Field(default_factory=lambda: list(DEFAULT_ARMS),
                            description="arms to run (sft rft srft-oracle srft-critic srft-noise prefix random "
                                        "mistakes-only, and srft-confidence on request); srft-noise expands to one "
                                        "arm per q, srft-confidence to srft-hard, srft-soft, srft-soft-flat")
    max_steps: int = Field(16, ge=4, description="actions per episode for the teacher and the students")
    max_length: int = Field(2048, ge=64, description="longest training sample in tokens (longer: dropped)")
    eval_batch: int = Field(64, ge=1, description="episodes decoded together")
    n_boot: int = Field(10_000, ge=100, description="bootstrap resamples in srft compare")
    workers: int = Field(2, ge=1, description="fine-tune+evaluate jobs run in parallel processes (one per core)")
    threads: int = Field(1, ge=1, description="torch CPU threads; 1 is fastest for these tiny models when the "
                                              "cores are shared (measured: 1.6x faster training, 10x faster "
                                              "decoding than 2 threads under load)")

    @model_validator(mode="after")
    def _check(self) -> LabConfig:
        unknown = sorted(set(self.arms) - set(ARM_NAMES))
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; known: {', '.join(ARM_NAMES)}")
        if "rft" not in self.arms:
            raise ValueError("arms must include rft: every difference is reported against it")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds}: a seed is listed twice")
        bad = [q for q in self.noise if not 0 < q <= 1]
        if bad:
            raise ValueError(f"noise rates {bad} must be in (0, 1] (q=0 is the srft-oracle arm)")
        self.teacher.max_steps = self.max_steps
        return self


DEFAULT_ARMS = ("sft", "rft", "srft-oracle", "srft-critic", "srft-noise", "prefix", "random", "mistakes-only")
ARM_NAMES = (*DEFAULT_ARMS, "srft-confidence")


def arms(config: LabConfig) -> list[Arm]:
    """The arms to train, in report order."""
    out = []
    for name in config.arms:
        if name == "srft-noise":
            out += [Arm(name=f"srft-q{q:g}", policy=PolicyConfig(name="srft"), labels="flip", q=q,
                        role=f"srft with oracle labels flipped at rate q={q:g} (critic noise)")
                    for q in sorted(config.noise)]
        elif name == "srft-confidence":
            out += confidence_arms(config.confidence_q)
        else:
            out.append(_ARMS[name])
    return out


def confidence_arms(q: float) -> list[Arm]:
    """What a critic's confidence buys at one error rate q: the same flipped labels trained hard, or weighted by
    simulated votes whose confidence is informative (errors on unsure steps) or not (srft.lab.data.vote_labels)."""
    soft = PolicyConfig(name="srft", confidence_weights=True)
    return [Arm(name="srft-hard", policy=PolicyConfig(name="srft"), labels="flip", q=q,
                role=f"srft with oracle labels flipped at q={q:g}, hard masks"),
            Arm(name="srft-soft", policy=soft, labels="flip", q=q, votes="informative",
                role=f"the same labels, weighted by votes whose confidence is low where they are wrong (q={q:g})"),
            Arm(name="srft-soft-flat", policy=soft, labels="flip", q=q, votes="uninformative",
                role=f"the same labels, weighted by votes whose confidence says nothing (q={q:g})")]


_ARMS = {
    "sft": Arm(name="sft", policy=PolicyConfig(name="sft"), role="every step of every trajectory"),
    "rft": Arm(name="rft", policy=PolicyConfig(name="rft"), role="resolved trajectories only (the baseline)"),
    "srft-oracle": Arm(name="srft-oracle", policy=PolicyConfig(name="srft"), labels="oracle",
                       role="srft, mistake steps masked by the true labels"),
    "srft-critic": Arm(name="srft-critic", policy=PolicyConfig(name="srft"), labels="critic",
                       role="srft, mistake steps masked by the heuristic critic"),
    "prefix": Arm(name="prefix", policy=PolicyConfig(name="prefix"), labels="oracle",
                  role="unresolved trajectories trained up to their first true mistake"),
    "random": Arm(name="random", policy=PolicyConfig(name="random"), labels="oracle",
                  role="srft's number of masked steps, chosen at random (control)"),
    "mistakes-only": Arm(name="mistakes-only", labels="oracle", policy=PolicyConfig(
        name="srft", mask_labels=["good", "unnecessary", "recover"], label_on_resolved=True, unlabelled="mask"),
        role="harm check: only the true mistake steps are trained"),
}


PRESETS: dict[str, dict] = {
    # Pipeline check for tests and `make demo`: every stage and arm runs, in well under 3 minutes on 2 cores;
    # the students are far too small and short-trained to mean anything.
    "tiny": dict(tasks=dict(train=32, eval=12, pretrain=48), seeds=[0], noise=[0.5], max_steps=8,
                 student=dict(preset="tiny", vocab_size=512), max_length=1024, eval_batch=32, n_boot=500, workers=1,
                 induction=dict(max_steps=3, batch_size=8, lr=1e-3, warmup_ratio=0, scheduler="constant"),
                 pretrain=dict(max_steps=6, batch_size=8, lr=2e-3, scheduler="constant"),
                 finetune=dict(max_steps=4, batch_size=8)),
    # The measured comparison: 42 min on 2 CPU cores (docs/lab.md "Results"; the issue aimed at 30).
    "small": dict(),
    # The run to do with more compute: more tasks, a bigger student, more seeds and noise levels.
    "paper": dict(tasks=dict(train=2000, eval=500, pretrain=20000), seeds=[0, 1, 2, 3, 4],
                  noise=[0.05, 0.1, 0.2, 0.3, 0.5], student=dict(preset="base", vocab_size=1024),
                  pretrain=dict(max_steps=5000, batch_size=32, lr=1e-3),
                  finetune=dict(max_steps=1000, batch_size=32, lr=5e-4)),
}


def preset_config(name: str, **overrides) -> LabConfig:
    """The named preset, with top-level field overrides (e.g. seeds=[0])."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return LabConfig(preset=name, **{**PRESETS[name], **overrides})


def apply_sets(config: LabConfig, sets: list[str]) -> LabConfig:
    """`key.sub=value` overrides (`srft.config`: values parsed as YAML, 200, 1e-3, [0, 1], {easy: 1}); an
    unknown key is an error that names it (the model forbids extra fields)."""
    from srft.config import apply_overrides, validate

    return validate(LabConfig, apply_overrides(config.model_dump(), sets, option="--set"))


def recipe_defaults(config: LabConfig) -> dict[str, dict[str, Any]]:
    """The `srft run` recipe sections (plain dicts) a lab run means: every arm as a policy, the fine-tuning
    schedule, rollouts on the held-out tasks as the evaluation, paired statistics against rft. `srft lab` runs
    exactly this; in a recipe with a `lab:` section, every key the recipe sets wins over these."""
    c, tune = config, config.finetune
    return {
        "run": {"threads": c.threads, "workers": c.workers},
        "annotate": {"critic": {"name": "heuristic"}, "only": "unresolved"},
        "build": {"policies": {arm.name: _arm_policy(arm, c.seed) for arm in arms(c)}, "max_length": c.max_length,
                  "truncation": "drop"},
        "train": {"method": "full", "max_steps": tune.max_steps, "batch_size": tune.batch_size, "lr": tune.lr,
                  "lr_scheduler": tune.scheduler, "warmup_ratio": tune.warmup_ratio, "max_length": c.max_length,
                  "seeds": list(c.seeds)},
        "evaluate": {"lab": True},
        "compare": {"baseline": "rft", "n_boot": c.n_boot, "seed": c.seed, "two_level": len(c.seeds) > 1},
    }


def _arm_policy(arm: Arm, seed: int) -> dict[str, Any]:
    """An arm as a recipe policy: its policy config plus where its labels come from (oracle = the gold labels)."""
    source = {"none": {}, "oracle": {"labels": "gold"}, "critic": {"labels": "critic"},
              "flip": {"labels": "gold", "flip": arm.q, "flip_seed": seed,
                       **({"flip_confidence": arm.votes} if arm.votes else {})}}[arm.labels]
    return {**arm.policy.model_dump(mode="json", exclude_defaults=True), "name": arm.policy.name, **source}
