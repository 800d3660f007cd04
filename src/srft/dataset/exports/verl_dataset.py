"""srft -> verl: a `MultiTurnSFTDataset` that honours srft's per-message `loss_mask` on any verl version.

Copied next to `train.parquet` by `srft build --export verl`; point verl at it with
`data.custom_cls.path=<this file> data.custom_cls.name=SrftMultiTurnSFTDataset`. The pure helpers below run
without verl (srft's tests use them); the subclass is defined only where verl is installed.
"""

from __future__ import annotations

import json
from typing import Any

ARGUMENTS_AS_DICT = False  # set by the exporter: the student template wants tool-call arguments as dicts


def decode_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parquet rows -> chat-template messages: drop null keys, optionally parse argument strings to dicts."""
    out = []
    for m in messages:
        m = {k: v for k, v in dict(m).items() if v is not None}
        calls = []
        for tc in m.get("tool_calls") or []:
            tc = {k: v for k, v in dict(tc).items() if v not in (None, "")}
            fn = dict(tc["function"])
            if ARGUMENTS_AS_DICT:
                try:
                    parsed = json.loads(fn["arguments"])
                    fn["arguments"] = parsed if isinstance(parsed, dict) else fn["arguments"]
                except (TypeError, json.JSONDecodeError):
                    pass
            calls.append({**tc, "function": fn})
        if calls:
            m["tool_calls"] = calls
        else:
            m.pop("tool_calls", None)
        out.append(m)
    return out


def decode_tools(tools_json: str | None) -> list[dict[str, Any]] | None:
    tools = json.loads(tools_json) if tools_json else None
    return tools or None


try:  # only inside verl
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset
except ImportError:  # pragma: no cover - srft's own environment has no verl
    MultiTurnSFTDataset = None

if MultiTurnSFTDataset is not None:

    class SrftMultiTurnSFTDataset(MultiTurnSFTDataset):
        """Decodes tools/arguments and zeroes the loss of every message whose `loss_mask` is 0."""

        def _read_files_and_process(self):
            super()._read_files_and_process()
            self.messages = [decode_messages(list(m)) for m in self.messages]
            if "tools_json" in self.dataframe.columns:
                self.tools = [decode_tools(t) for t in self.dataframe["tools_json"].tolist()]

        def _build_messages(self, example: dict):
            return decode_messages(super()._build_messages(example))

        def _process_single_message(self, index, message, *args, **kwargs):
            result = super()._process_single_message(index, message, *args, **kwargs)
            if message.get("loss_mask", 1) == 0 or message.get("trainable") is False:
                input_ids, loss_mask, *rest = result
                result = (input_ids, loss_mask * 0, *rest)
            return result
