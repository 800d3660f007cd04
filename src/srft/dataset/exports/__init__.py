"""Exporters: reshape the built samples into files other trainers load. Masks are never recomputed here.

    EXPORTERS   name -> "module:function"; each function is `export(ctx, out_dir) -> result dict`
                ({"files": [...], "rows": n, "warnings": [...], "train": "command"}), writing only inside
                `out_dir` (a temp folder that `srft build` renames to `exports/<name>`).

Every export ships srft's own token ids and labels (-100 = no loss) through the trainer's pre-tokenized path, so
the trainer trains exactly srft's tokens in exactly srft's context, whatever the chat template: re-rendering the
messages with the trainer's own template code differs from the HF template srft used (tool schemas, tool calls,
the tokens around the end-of-turn token, reasoning blocks, per-message rendering). The ids are only right for
the tokenizer srft built with: configs name it, and the verl and torchtune helpers refuse any other tokenizer.
What a format cannot carry (soft weights) is counted in `lost_in_export` (docs/masks.md, "Exports").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srft.registry import resolve

EXPORTERS: dict[str, str] = {
    "trl": "srft.dataset.exports.trl:export",
    "axolotl": "srft.dataset.exports.axolotl:export",
    "verl": "srft.dataset.exports.verl:export",
    "torchtune": "srft.dataset.exports.torchtune:export",
    "llamafactory": "srft.dataset.exports.llamafactory:export",
}

# Text whose ids identify a tokenizer well enough to catch "trained with another model's tokenizer": code,
# indentation, accents, CJK, an emoji, a tab and blank lines all hit different merges.
PROBE = "srft tokenizer check: def f(x):\n    return x  # naïve café, 世界 🙂\n\t\n\n"


def get_exporter(name: str):
    return resolve(EXPORTERS, name, "export format")


@dataclass
class ExportContext:
    """What `srft build` hands every exporter."""

    dataset: Any                          # the saved datasets.Dataset (columns of DEVELOPERS.md "Build dataset")
    renderer: Any                         # srft.dataset.render.Renderer of the student tokenizer
    config: Any                           # srft.dataset.build.BuildConfig


def lost_in_export(ctx: ExportContext, name: str) -> list[str]:
    """Warnings, with exact counts, for what the trainer's format cannot carry. Every exporter calls this, so a
    new kind of per-token weight is declared here once."""
    out = []
    if "loss_weights" in ctx.dataset.column_names:
        partial = partial_weight_tokens(ctx.dataset)
        if partial:
            out.append(f"{name}: {partial} trained token(s) have a soft weight other than 1 and are trained at "
                       "weight 1 (the format has no per-token weights; `srft train` uses loss_weights)")
    return out


def partial_weight_tokens(dataset) -> int:
    """Trained tokens whose loss weight is neither 0 nor 1 (counted in Arrow)."""
    import pyarrow.compute as pc

    weights = pc.list_flatten(dataset.data.table.column("loss_weights"))
    return int(pc.sum(pc.and_(pc.greater(weights, 0), pc.not_equal(weights, 1))).as_py() or 0)


def token_table(ctx: ExportContext, attention_mask: bool = False):
    """The dataset's `input_ids` and `labels` (and an all-ones `attention_mask`) as an Arrow table, rows in the
    dataset's order: the exact ids and labels srft built, without a copy through Python lists."""
    import numpy as np
    import pyarrow as pa

    table = ctx.dataset.data.table
    ids = table.column("input_ids").combine_chunks()
    columns = {"input_ids": ids, "labels": table.column("labels").combine_chunks()}
    if attention_mask:
        ones = pa.array(np.ones(len(ids.flatten()), dtype=np.int64))
        columns["attention_mask"] = pa.ListArray.from_arrays(ids.offsets, ones)
    return pa.table(columns)


def write_tokens(ctx: ExportContext, path: Path, attention_mask: bool = False) -> int:
    import pyarrow.parquet as pq

    table = token_table(ctx, attention_mask)
    pq.write_table(table, path)
    return table.num_rows


def longest(dataset) -> int:
    """Tokens in the longest sample (computed in Arrow, without loading the ids)."""
    import pyarrow.compute as pc

    if len(dataset) == 0:
        return 0
    return int(pc.max(pc.list_value_length(dataset.data.table.column("input_ids"))).as_py())


def final_dir(out: Path) -> Path:
    """Where `srft build` moves the exporter's temp folder `exports/.<name>.tmp-*` (configs name final paths)."""
    name = out.name.lstrip(".").split(".tmp-")[0]
    return (out.parent / name).resolve()


def model_dir(ctx: ExportContext) -> Path | None:
    """The `--tokenizer` directory when it is a whole model (config.json beside the tokenizer): configs name it as
    the model to train, since srft's ids are only right for the model whose tokenizer made them."""
    path = Path(ctx.config.tokenizer)
    return path.resolve() if path.is_dir() and (path / "config.json").is_file() else None


def no_model_warning(ctx: ExportContext, name: str, option: str, file: str) -> list[str]:
    if model_dir(ctx) is not None:
        return []
    return [f"{name}: --tokenizer {ctx.config.tokenizer} is not a model directory (no config.json), so {file} "
            f"has no `{option}`: set it to the student model that uses this tokenizer"]


def tokenizer_check(ctx: ExportContext) -> dict[str, Any]:
    """What the shipped verl/torchtune helpers compare the trainer's tokenizer against: the ids of `PROBE` and of
    the end-of-turn tokens (the token srft trains at the end of every step)."""
    tok = ctx.renderer.tok
    special = {}
    for eot in ctx.renderer.profile.eots:
        ids = tok.encode(eot, add_special_tokens=False)
        if len(ids) == 1:
            special[eot] = ids[0]
    return {"tokenizer": str(Path(ctx.config.tokenizer).resolve()), "probe": PROBE,
            "probe_ids": tok.encode(PROBE, add_special_tokens=False), "special_ids": special}


def helper_source(template: Path, **constants: Any) -> str:
    """A shipped helper module with its `NAME = ...` placeholder lines replaced by the build's values."""
    from pprint import pformat

    lines = template.read_text(encoding="utf-8").splitlines()
    for name, value in constants.items():
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name} = "))
        lines[i] = f"{name} = {pformat(value, width=110, sort_dicts=False, compact=True)}"
    return "\n".join(lines) + "\n"
