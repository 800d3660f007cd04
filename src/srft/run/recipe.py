"""The `srft run` recipe: one pydantic model per section, each field documented; unknown keys are errors.

    run        name, run directory, CPU threads
    lab        (optional) use the lab instead of your own data, student and harness: srft.lab presets
    ingest     trajectory files/data sets, harness outcomes, leakage guard        (srft ingest)
    annotate   the critic and its backend, gold labels for the agreement check    (srft annotate)
    build      policies, tokenizer, masks, exports                                 (srft build)
    train      the student, LoRA/full, schedule, seeds, multi-GPU launch          (srft train)
    evaluate   lab rollouts, or your harness outputs per policy and seed
    compare    paired statistics                                                   (srft compare)
    report     report.html

Sections reuse the stage configs they feed (AnnotateConfig, PolicyConfig, MaskConfig, TrainConfig,
CompareConfig), so a recipe key means exactly what the command's option means. Pure: no I/O, no torch.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srft.compare.harness import CompareConfig
from srft.critic.annotate import AnnotateConfig
from srft.dataset.masks import MaskConfig
from srft.train.models import InitConfig
from srft.policy import PolicyConfig
from srft.train.config import TrainConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSection(_Section):
    """Where the run writes."""

    name: str | None = Field(None, description="run name (default: the recipe file's stem)")
    out: str | None = Field(None, description="run directory (default: runs/<name>); `srft run --out` wins")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: the lab preset's, else "
                                "torch's choice); 1 is fastest for tiny students on a busy machine")
    workers: int = Field(1, ge=1, description="nodes run at once, each in its own process (independent students "
                         "train side by side, e.g. one per CPU core); 1: one after another in this process")


class LabSection(_Section):
    """Run on the lab (docs/lab.md): its teacher's trajectories and oracle labels, its tokenizer and pretrained
    base student, its held-out tasks. Every recipe key left unset comes from the preset
    (`srft.lab.config.recipe_defaults`: its arms as policies, its fine-tuning schedule, rollouts, rft as baseline),
    so `srft lab` and a recipe agree without copying numbers."""

    preset: str = Field("tiny", description="srft.lab.config.PRESETS name: tiny | small | paper")
    overrides: dict[str, Any] = Field(default_factory=dict, description="LabConfig fields to change, merged "
                                      "into the preset, e.g. {tasks: {train: 64}, teacher: {notice: 0.2}}")
    results: bool = Field(False, description="also write the lab's results into the run directory as `srft lab` "
                          "does: results.md, noise.png, lab_report.json, outcome tables per difficulty")

    def config(self):
        """The LabConfig this section means (raises ValueError naming a bad preset or field)."""
        from srft.lab.config import PRESETS, LabConfig

        if self.preset not in PRESETS:
            raise ValueError(f"unknown lab preset {self.preset!r}; known: {', '.join(PRESETS)}")
        return LabConfig(**_merge({**PRESETS[self.preset], "preset": self.preset}, self.overrides))

    def problems(self) -> list[tuple[tuple, str]]:
        """Bad preset or override keys/values, each at its recipe key (lab.overrides.<field>)."""
        from pydantic import ValidationError

        from srft.lab.config import LabConfig
        from srft.run.loader import error_message

        try:
            self.config()
        except ValidationError as exc:
            return [(("lab", "overrides", *e["loc"]), error_message(e, LabConfig)) for e in exc.errors()]
        except ValueError as exc:
            return [(("lab", "preset"), str(exc))]
        return []


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class IngestSection(_Section):
    """Where trajectories come from (`srft ingest`); with `lab`, the lab teacher writes them."""

    paths: list[str] = Field(default_factory=list, description="trajectory files/folders/data sets to read")
    outcomes: list[str] = Field(default_factory=list, description="SWE-bench harness outputs to join")
    exclude_instances: str | None = Field(None, description="file of instance ids to leave out (leakage guard)")
    outcomes_override: bool = Field(False, description="harness reports win over a data set's resolved column")
    format: str | None = Field(None, description="force one reader instead of detecting the format")
    skip_bad: bool = Field(False, description="carry on when files or rows are skipped (they are still counted)")


class AnnotateSection(AnnotateConfig):
    """The critic that labels steps (`srft annotate` options), plus gold labels for the agreement check."""

    gold: str | None = Field(None, description="gold step-label file (e.g. `srft labels export`); lab: oracle")


class PolicySection(PolicyConfig):
    """One policy variant: its name in the recipe is the key; `name` picks the policy function (default: key)."""

    name: str | None = Field(None, description="policy function: sft | rft | srft | prefix | random | dotted path")
    labels: Literal["critic", "gold"] = Field("critic", description="step labels from the critic or the gold file")
    flip: float | None = Field(None, ge=0, le=1, description="simulated critic noise: each step's gold label "
                               "flips its mask decision with this probability (srft.lab.data.flip_labels)")
    flip_seed: int = Field(0, description="seed of the label flips")
    flip_confidence: Literal["informative", "uninformative"] | None = Field(
        None, description="give the flipped labels 3 simulated votes whose confidence is (or is not) low where "
        "they are wrong (srft.lab.data.vote_labels); use with confidence_weights")


class BuildSection(MaskConfig):
    """How trajectories become masked token samples (`srft build`), one dataset per policy."""

    policies: dict[str, PolicySection] = Field(default_factory=dict, description="policy variants to build and "
                                               "train, by name (with `lab:`, default: the preset's arms)")
    tokenizer: str | None = Field(None, description="tokenizer folder (default: the student's)")
    exports: list[str] = Field(default_factory=list, description="trainer formats to export (trl, axolotl, ...)")
    num_proc: int = Field(1, ge=1, description="tokenizer worker processes")

    @model_validator(mode="after")
    def _check_build(self) -> BuildSection:
        problems = [f"policy name {n!r}: use letters, digits, '-', '_', '.'" for n in self.policies
                    if not re.fullmatch(r"[A-Za-z0-9_.-]+", n)]
        if "base" in self.policies:
            problems.append("'base' names the untrained student in the comparison; call the policy otherwise")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class LaunchSection(_Section):
    """Train in a subprocess under `accelerate launch` (multi-GPU: DDP, FSDP, DeepSpeed ZeRO-3)."""

    accelerate_config: str = Field(description="accelerate config file, e.g. configs/accelerate/fsdp.yaml")
    num_processes: int = Field(1, ge=1, description="processes (GPUs) to launch")
    extra_args: list[str] = Field(default_factory=list, description="more `accelerate launch` arguments")


class TrainSection(TrainConfig):
    """`srft train` options shared by every policy, plus the seeds and where the student comes from."""

    model: str | None = Field(None, description="base model folder (Hugging Face layout); lab: its base student")
    init: InitConfig | None = Field(None, description="a random-init student around build.tokenizer instead")
    seeds: list[int] = Field([0], min_length=1, description="training seeds: one student per policy and seed")
    launch: LaunchSection | None = Field(None, description="run under `accelerate launch` (multi-GPU)")

    @model_validator(mode="after")
    def _check_train(self) -> TrainSection:
        if self.model is not None and self.init is not None:
            raise ValueError("set train.model (a model folder) or train.init (a random-init student), not both")
        if "seed" in self.model_fields_set:
            raise ValueError("train.seed: use train.seeds (a list; one student per seed)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"train.seeds {self.seeds}: a seed is listed twice")
        return self

    def config_for(self, model: str, seed: int) -> TrainConfig:
        fields = self.model_dump(include=set(TrainConfig.model_fields), exclude={"model", "seed"})
        return TrainConfig(**fields, model=model, seed=seed)


class EvaluateSection(_Section):
    """How trained students are scored: lab rollouts, or your harness outputs (one per seed, in seeds order)."""

    lab: bool = Field(False, description="roll every student out on the lab's held-out tasks")
    outcomes: dict[str, list[str]] = Field(default_factory=dict, description="policy -> harness output per "
                                           "seed; optional `base`: [the untrained student's output]")

    @model_validator(mode="after")
    def _one_mode(self) -> EvaluateSection:
        if bool(self.outcomes) == self.lab:
            raise ValueError("set either evaluate.lab: true or evaluate.outcomes (harness outputs per policy)")
        return self


class CompareSection(CompareConfig):
    """`srft compare` options; the systems are the policies (and `base`), their runs the seeds."""

    instances: str | None = Field(None, description="denominator: file of instance ids (e.g. Verified's 500)")
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples")


class ReportSection(_Section):
    """What report.html shows."""

    title: str | None = Field(None, description="page title (default: the run name)")
    note: str | None = Field(None, description="a paragraph shown under the title (what the run is for)")
    examples: int = Field(3, ge=0, le=20, description="example trajectories shown with labels and masks")
    example_policy: str | None = Field(None, description="whose masks the examples show (default: an srft policy)")
    max_chars: int = Field(400, ge=40, description="characters shown per message in the examples")


class Recipe(_Section):
    """A whole `srft run`: stages and their options. Unknown keys are errors that name the key."""

    run: RunSection = Field(default_factory=RunSection, description="run name and directory")
    lab: LabSection | None = Field(None, description="use the lab instead of your data, student and harness")
    ingest: IngestSection = Field(default_factory=IngestSection, description="trajectory sources")
    annotate: AnnotateSection = Field(default_factory=AnnotateSection, description="critic")
    build: BuildSection = Field(default_factory=BuildSection, description="policies, tokenizer, masks, exports")
    train: TrainSection = Field(default_factory=TrainSection, description="student and training options")
    evaluate: EvaluateSection | None = Field(None, description="scoring of the students (none: stop after train)")
    compare: CompareSection = Field(default_factory=CompareSection, description="paired statistics")
    report: ReportSection = Field(default_factory=ReportSection, description="report.html")

    @model_validator(mode="after")
    def _lab_defaults(self) -> Recipe:
        """With a `lab:` section, each key the recipe leaves unset comes from the preset (a policies mapping you
        give replaces the preset's arms whole)."""
        if self.lab is None:
            return self
        from srft.lab.config import recipe_defaults

        try:
            defaults = recipe_defaults(self.lab.config())
        except ValueError:  # a bad preset or override: problems() reports it at its key
            return self
        for name, values in defaults.items():
            if name == "evaluate":  # one choice (rollouts, or your harness outputs): yours replaces the lab's whole
                if "evaluate" not in self.model_fields_set:
                    self.evaluate = EvaluateSection(**values)
                continue
            section = getattr(self, name)
            setattr(self, name, type(section).model_validate({**values, **section.model_dump(exclude_unset=True)}))
        return self

    def problems(self) -> list[tuple[tuple, str]]:
        """Cross-section problems as (key path, message), all at once."""
        out: list[tuple[tuple, str]] = []
        policies, seeds = list(self.build.policies), self.train.seeds
        lab_problems = self.lab.problems() if self.lab is not None else []
        out += lab_problems
        if not policies and not lab_problems:
            out.append((("build", "policies"), "name at least one policy, e.g. {srft: {}}"))
        if self.lab is not None:
            if self.ingest.paths:
                out.append((("ingest", "paths"), "the lab writes the trajectories: drop ingest.paths or lab"))
        elif not self.ingest.paths:
            out.append((("ingest", "paths"), "name the trajectory files to read (or use a `lab:` section)"))
        if self.lab is None and self.train.model is None and self.train.init is None:
            out.append((("train", "model"), "set train.model (a model folder) or train.init"))
        if self.train.init is not None and not self.build.tokenizer and self.lab is None:
            out.append((("train", "init"), "a random-init student needs build.tokenizer"))
        if self.compare.baseline and self.compare.baseline not in [*policies, "base"]:
            out.append((("compare", "baseline"), f"{self.compare.baseline!r} is not a policy ({', '.join(policies)})"))
        if self.evaluate is not None:
            out += self._evaluate_problems(policies, seeds)
        for name, pol in self.build.policies.items():
            if pol.labels == "gold" and not (self.lab or self.annotate.gold):
                out.append((("build", "policies", name, "labels"), "gold labels need annotate.gold or a lab"))
            if pol.flip is not None and (pol.labels != "gold" or not self.uses_labels(name)):
                out.append((("build", "policies", name, "flip"), "flip perturbs gold labels: set labels: gold on "
                            "a policy that reads labels"))
            if pol.flip_confidence is not None and pol.flip is None:
                out.append((("build", "policies", name, "flip_confidence"), "simulated votes need a flip rate: "
                            "set flip"))
        if self.report.example_policy and self.report.example_policy not in policies:
            out.append((("report", "example_policy"), f"not a policy ({', '.join(policies)})"))
        return out

    def _evaluate_problems(self, policies: list[str], seeds: list[int]) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        if self.evaluate is None:
            return out
        if self.evaluate.lab and self.lab is None:
            out.append((("evaluate", "lab"), "lab rollouts need a `lab:` section (students of the lab's format)"))
        for name, paths in self.evaluate.outcomes.items():
            want = 1 if name == "base" else len(seeds)
            if name not in [*policies, "base"]:
                out.append((("evaluate", "outcomes", name), f"not a policy ({', '.join(policies)}) or base"))
            elif len(paths) != want:
                out.append((("evaluate", "outcomes", name), f"{len(paths)} harness output(s) for {want} "
                            f"{'untrained student' if name == 'base' else f'seed(s) {seeds}'}: give one per seed, "
                            "in that order"))
        missing = [p for p in policies if self.evaluate.outcomes and p not in self.evaluate.outcomes]
        if missing:
            out.append((("evaluate", "outcomes"), f"no harness outputs for {', '.join(missing)}"))
        return out

    def policy_config(self, name: str) -> PolicyConfig:
        section = self.build.policies[name]
        fields = section.model_dump(include=set(PolicyConfig.model_fields))
        return PolicyConfig(**{**fields, "name": section.name or name})

    def uses_labels(self, name: str) -> bool:
        return self.policy_config(name).name not in ("sft", "rft")

    def label_source(self, name: str) -> str | None:
        """'critic', 'gold' or None (the policy reads no labels)."""
        return self.build.policies[name].labels if self.uses_labels(name) else None
