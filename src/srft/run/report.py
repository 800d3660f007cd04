"""report.html of an `srft run`: one self-contained page (images inline as data URIs, every text escaped).

Sections: data summary (trajectories, resolved share, steps, label distribution, masked-token share per
policy), critic agreement with gold labels (when there are any; `srft.critic.eval`), training loss curves, the
comparison table with CIs and the forest plot (`srft.compare.render`), and example trajectories with each step
coloured by its label and struck through where the policy masks it.

    collect(recipe, dep_dirs) -> dict     read the node folders of a run (I/O; where files sit: srft.run.layout)
    render(data) -> str                   the page (pure: Jinja2 with autoescape, template in srft/templates/)
    write_report(recipe, dep_dirs, path)  both, written atomically; returns a small summary
The page holds no script, so it renders anywhere (and a browser has no console error to report).
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srft.io import atomic_write_text
from srft.model import LABELS, Trajectory
from srft.run import layout

if TYPE_CHECKING:
    from srft.run.recipe import Recipe

TEMPLATE = "report.html.jinja"
LABEL_COLOURS = {"good": "#d8f0d8", "unnecessary": "#fff1c2", "mistake": "#f8d0d0", "recover": "#d6e6fb",
                 None: "#eeeeee"}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(path: Path) -> str | None:
    return data_uri(path.read_bytes()) if path.is_file() else None


# -- collect (I/O) -------------------------------------------------------------------------------------------

def collect(recipe: Recipe, dep_dirs: dict[str, Path]) -> dict[str, Any]:
    """Everything the page shows, read from the run's node folders (missing parts become None)."""
    from srft.io import iter_trajectories

    ingest = _json(dep_dirs["ingest"] / "ingest_report.json") or {}
    critic = _labels(dep_dirs["annotate"] / layout.ANNOTATIONS, dep_dirs["ingest"]) if "annotate" in dep_dirs \
        else {}
    gold = _gold(recipe, dep_dirs)
    trajectories = list(iter_trajectories(dep_dirs["ingest"]))
    policies = list(recipe.build.policies)
    builds = {p: _json(dep_dirs[f"build/{p}"] / layout.BUILD_REPORT) for p in policies if f"build/{p}" in dep_dirs}
    trains = {k.removeprefix("train/"): _json(layout.train_report(d))
              for k, d in dep_dirs.items() if k.startswith("train/")}
    compare = _json(dep_dirs["compare"] / layout.COMPARE) if "compare" in dep_dirs else None
    critic_eval = _json(dep_dirs["critic_eval"] / layout.CRITIC_EVAL) if "critic_eval" in dep_dirs else None
    return {
        "title": recipe.report.title or recipe.run.name or "srft run",
        "note": recipe.report.note,
        "recipe": recipe.model_dump(mode="json"),
        "data": data_summary(trajectories, ingest, critic, gold),
        "policies": policy_rows(policies, builds, trains, compare),
        "build_warnings": _grouped_warnings(builds),
        "critic_eval": critic_eval,
        "confusion_png": _png(dep_dirs["critic_eval"] / layout.CONFUSION_PNG) if critic_eval else None,
        "loss_png": loss_plot(trains),
        "compare": compare,
        "forest_png": _png(dep_dirs["compare"] / layout.FOREST_PNG) if compare else None,
        "examples": examples(recipe, trajectories, critic, gold),
    }


def _labels(path: Path, store: Path) -> dict[tuple[str, int], Any]:
    from srft.critic.eval import TrajectoryIndex, load_labels

    if not path.is_file():
        return {}
    return {(x.trajectory_id, x.step): x for x in load_labels(path, TrajectoryIndex.from_store(store))}


def _gold(recipe: Recipe, dep_dirs: dict[str, Path]) -> dict[tuple[str, int], Any]:
    path = Path(recipe.annotate.gold) if recipe.annotate.gold else (
        dep_dirs["gold"] / layout.GOLD_LABELS if "gold" in dep_dirs else None)
    return _labels(path, dep_dirs["ingest"]) if path else {}


def data_summary(trajectories: list[Trajectory], ingest: dict[str, Any], critic: dict, gold: dict) -> dict[str, Any]:
    n = len(trajectories)
    resolved = sum(t.outcome.resolved is True for t in trajectories)
    unresolved = sum(t.outcome.resolved is False for t in trajectories)
    steps = sorted(len(t.steps) for t in trajectories)
    return {
        "trajectories": n, "resolved": resolved, "unresolved": unresolved, "unknown": n - resolved - unresolved,
        "resolved_share": resolved / n if n else None,
        "steps": sum(steps), "steps_mean": sum(steps) / n if n else None,
        "steps_median": steps[n // 2] if n else None, "steps_max": steps[-1] if n else None,
        "by_format": ingest.get("by_format", {}), "skipped": ingest.get("skipped", 0),
        "excluded": ingest.get("excluded", 0), "duplicates": ingest.get("duplicates", 0),
        "labels": [{"source": name, **{lab: c.get(lab, 0) for lab in LABELS}, "total": sum(c.values())}
                   for name, c in (("critic", Counter(x.label for x in critic.values())),
                                   ("gold", Counter(x.label for x in gold.values()))) if c],
    }


def policy_rows(policies: list[str], builds: dict, trains: dict, compare: dict | None) -> list[dict[str, Any]]:
    """One row per policy: what its dataset trains and masks, its students' losses, its resolve rate."""
    rates = {s["name"]: s for s in (compare or {}).get("systems", [])}
    rows = []
    if "base" in rates:  # the student before fine-tuning (the paper's 7% row)
        rows.append({"policy": "base (before fine-tuning)", "used": None, "dropped": None, "samples": None,
                     "tokens": None, "trained_tokens": None, "masked_tokens": None, "masked_share": None,
                     "final_losses": [], "rate": rates["base"]["rate"], "ci": rates["base"]["ci"]})
    for p in policies:
        b = builds.get(p) or {}
        trained, masked = b.get("trained_tokens"), b.get("masked_step_tokens")
        share = masked / (trained + masked) if isinstance(trained, int) and isinstance(masked, int) and \
            trained + masked else None
        losses = [t["final_loss"] for k, t in sorted(trains.items()) if k.startswith(p + "/") and t
                  and t.get("final_loss") is not None]
        rows.append({"policy": p, "used": b.get("trajectories_used"),
                     "dropped": b.get("drop_reasons") or b.get("trajectories_dropped"),
                     "samples": b.get("samples"), "tokens": b.get("tokens"), "trained_tokens": trained,
                     "masked_tokens": masked, "masked_share": share, "final_losses": losses,
                     "rate": rates.get(p, {}).get("rate"), "ci": rates.get(p, {}).get("ci")})
    return rows


def _grouped_warnings(builds: dict[str, dict | None]) -> list[dict[str, Any]]:
    """Each distinct build warning once, with the policies it concerns (a template warning hits them all)."""
    seen: dict[str, list[str]] = {}
    for policy, b in builds.items():
        for warning in (b or {}).get("warnings", []):
            seen.setdefault(warning, []).append(policy)
    return [{"policies": names, "text": text} for text, names in seen.items()]


def loss_plot(trains: dict[str, dict | None]) -> str | None:
    """Training loss against optimizer step, one line per student (colour = policy, style = seed)."""
    curves = {k: t["loss_curve"] for k, t in sorted(trains.items()) if t and t.get("loss_curve")}
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.subplots()
    policies = sorted({k.split("/")[0] for k in curves})
    seeds = sorted({k.split("/")[-1] for k in curves})
    for key, curve in curves.items():
        policy, seed = key.split("/")[0], key.split("/")[-1]
        ax.plot([e["step"] for e in curve], [e["loss"] for e in curve], color=f"C{policies.index(policy) % 10}",
                ls=("-", "--", ":", "-.")[seeds.index(seed) % 4], lw=1.4, label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return data_uri(buf.getvalue())


def examples(recipe: Recipe, trajectories: list[Trajectory], critic: dict, gold: dict) -> list[dict[str, Any]]:
    """Up to `report.examples` trajectories, most informative first: unresolved with a mistake and a recovery,
    unresolved with a mistake, then resolved; steps carry label, gold label, weight under the example policy."""
    from srft.policy import step_weights

    n = recipe.report.examples
    if not n or not trajectories:
        return []
    name = recipe.report.example_policy or next(
        (p for p in recipe.build.policies if recipe.policy_config(p).name == "srft"), next(iter(recipe.build.policies)))
    policy = recipe.policy_config(name)
    masks_from = gold if recipe.build.policies[name].labels == "gold" else critic  # the labels that policy reads

    def labels_of(t: Trajectory, src: dict) -> list[str | None]:
        return [getattr(src.get((t.id, s.number)), "label", None) for s in t.steps]

    def rank(t: Trajectory) -> tuple:
        labs = set(labels_of(t, masks_from))
        return (t.outcome.resolved is not False, "mistake" not in labs, "recover" not in labs, t.id)

    ranked = sorted(trajectories, key=rank)
    resolved = [t for t in ranked if t.outcome.resolved]
    chosen = [t for t in ranked if not t.outcome.resolved][: n - 1 if resolved and n > 1 else n] + resolved[:1]
    ids = {t.id for t in chosen}
    chosen = (chosen + [t for t in ranked if t.id not in ids])[:n]
    return [_example(t, labels_of(t, critic), labels_of(t, gold), labels_of(t, masks_from),
                     step_weights(_labelled(t, masks_from), policy), name, recipe.report.max_chars) for t in chosen]


def _labelled(t: Trajectory, src: dict) -> Trajectory:
    steps = [s.model_copy(update={"label": getattr(src.get((t.id, s.number)), "label", None)}) for s in t.steps]
    return t.model_copy(update={"steps": steps})


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 20] + f" [... {len(text) - n + 20} chars]"


def _example(t: Trajectory, critic: list, gold: list, used: list, weights: list[float], policy: str,
             n: int) -> dict[str, Any]:
    """One trajectory for the page; a step's colour is the label its policy reads (critic or gold)."""
    steps = []
    for s, lab, g, u, w in zip(t.steps, critic, gold, used, weights, strict=True):
        obs = "\n".join(m.content for m in t.observations(s))
        steps.append({"number": s.number, "label": lab, "gold": g, "weight": w, "masked": w == 0.0,
                      "colour": LABEL_COLOURS.get(u, LABEL_COLOURS[None]),
                      "thought": _clip(s.thought, n), "action": _clip(s.action, n), "observation": _clip(obs, n)})
    return {"id": t.id, "instance_id": t.instance_id, "resolved": t.outcome.resolved, "status": t.outcome.status,
            "task": _clip(t.task(), 2 * n), "policy": policy, "steps": steps,
            "masked": sum(x["masked"] for x in steps)}


# -- render (pure) -------------------------------------------------------------------------------------------

def render(data: dict[str, Any]) -> str:
    from importlib import resources

    import jinja2

    from srft.compare.render import summary_rows

    text = resources.files("srft.run").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["pct"] = lambda x: "–" if x is None else f"{100 * x:.1f}%"
    env.filters["num"] = lambda x, d=3: "–" if x is None else (f"{x:,}" if isinstance(x, int) else f"{x:.{d}f}")
    tables = summary_rows(data["compare"]) if data["compare"] else None
    return env.from_string(text).render(**data, labels=LABELS, colours=LABEL_COLOURS, compare_tables=tables,
                                        recipe_json=json.dumps(data["recipe"], indent=2, sort_keys=True))


def write_report(recipe: Recipe, dep_dirs: dict[str, Path], path: Path) -> dict[str, Any]:
    data = collect(recipe, dep_dirs)
    atomic_write_text(path, render(data))
    return {"report": path.name, "examples": len(data["examples"]), "sections": [
        s for s, present in (("data", True), ("critic", data["critic_eval"] is not None),
                             ("training", data["loss_png"] is not None), ("comparison", data["compare"] is not None),
                             ("examples", bool(data["examples"]))) if present]}
