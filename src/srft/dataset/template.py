"""What a chat template does, found by probing it once per tokenizer: its end-of-turn strings, how it wants
tool-call arguments, whether it renders tool calls and reasoning, the text it inserts into an empty assistant turn,
and whether it is prefix-preserving (srft.dataset.render relies on all of these to locate a step's text).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# End-of-message tokens of common templates; only those in the tokenizer's vocabulary are used.
KNOWN_EOTS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|return|>", "<|call|>")
_PROBE = "Probe7f3a answer"
PROBE_TOOL = {"type": "function", "function": {
    "name": "probe_fn", "description": "Probe.",
    "parameters": {"type": "object", "properties": {"probe_arg": {"type": "integer"}}, "required": ["probe_arg"]}}}


class TemplateError(ValueError):
    """The tokenizer or its chat template cannot be used (names the directory and what is missing)."""


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str):
    """A fast HF tokenizer with a chat template, from a directory or a `.gguf` file (cached per path)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.exists():
        raise TemplateError(f"{path}: tokenizer not found (expected a directory with tokenizer.json and "
                            f"tokenizer_config.json, or a .gguf file)")
    if p.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    else:
        tok = AutoTokenizer.from_pretrained(str(p))
    if not getattr(tok, "chat_template", None):
        raise TemplateError(f"{path}: the tokenizer has no chat_template (add one to tokenizer_config.json)")
    if getattr(tok, "backend_tokenizer", None) is None:
        raise TemplateError(f"{path}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    return tok


@dataclass(frozen=True)
class TemplateProfile:
    """What a probe of the chat template found (computed once per tokenizer and template kwargs)."""

    eots: tuple[str, ...]               # end-of-turn strings; a step's trained text ends with one
    args_as_string: bool                # pass tool-call arguments as the JSON string (else as a dict)
    tool_calls_rendered: bool
    reasoning_rendered: bool            # `reasoning_content` appears in the render (at least for a last turn)
    fillers: tuple[str, ...]            # text the template inserts into an empty assistant turn (never trained)
    prefix_preserving: bool
    prefix_failures: tuple[str, ...] = ()
    unrenderable: tuple[str, ...] = ()  # probe conversations the template refuses (e.g. parallel tool calls)

    def warnings(self) -> list[str]:
        out = []
        if not self.prefix_preserving:
            out.append("chat template is not prefix-preserving (" + "; ".join(self.prefix_failures[:3]) +
                       "): with --render full some steps are trained in a context that differs from "
                       "inference; use --render per-step for exact samples")
        if not self.tool_calls_rendered:
            out.append("chat template does not render tool calls: steps are trained on their text content only")
        if not self.reasoning_rendered:
            out.append("chat template does not render reasoning_content: reasoning is neither seen nor trained")
        out += [f"chat template cannot render: {u}" for u in self.unrenderable]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "warnings": self.warnings()}


def find_eot(text: str, start: int, eots: tuple[str, ...]) -> tuple[int, str]:
    """(offset, string) of the first end-of-turn string at or after `start`; (-1, "") when there is none."""
    best, which = -1, ""
    for eot in eots:
        pos = text.find(eot, start)
        if pos >= 0 and (best < 0 or pos < best):
            best, which = pos, eot
    return best, which


def _call(args: Any, name: str = "probe_fn", call_id: str = "c1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _probe_conversations(args_as_string: bool) -> dict[str, list[dict]]:
    a = '{"probe_arg": 1}' if args_as_string else {"probe_arg": 1}
    sys_, user = {"role": "system", "content": "You are a probe."}, {"role": "user", "content": "Do the task."}
    tool = {"role": "tool", "content": "out 1", "tool_call_id": "c1"}
    return {
        "tool calls": [sys_, user, {"role": "assistant", "content": "Look.", "tool_calls": [_call(a)]}, tool,
                       {"role": "assistant", "content": "More.", "tool_calls": [_call(a, call_id="c2")]},
                       {**tool, "tool_call_id": "c2", "content": "out 2"}, {"role": "assistant", "content": "Done."},
                       {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "Bye."}],
        "parallel tool calls": [sys_, user, {"role": "assistant", "content": "", "tool_calls": [
            _call(a), _call(a, call_id="c2")]}, tool, {**tool, "tool_call_id": "c2", "content": "out 2"},
            {"role": "assistant", "content": "Done."}],
        "reasoning": [sys_, user, {"role": "assistant", "content": "Look.", "reasoning_content": "hm",
                                   "tool_calls": [_call(a)]}, tool,
                      {"role": "assistant", "content": "<think>\nok\n</think>\n\nDone."},
                      {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "Bye."}],
        "user observations": [sys_, user, {"role": "assistant", "content": "Run ls.", "reasoning_content": "r1"},
                              {"role": "user", "content": "a.py"},
                              {"role": "assistant", "content": "Run cat.", "reasoning_content": "r2"},
                              {"role": "user", "content": "x = 1"}, {"role": "assistant", "content": "Done."}],
    }


def probe(r: Any) -> TemplateProfile:
    """Probe the template of `r` (a srft.dataset.render.Renderer: its `tok`, `render` and `encode`)."""
    tok = r.tok
    vocab = set(tok.get_vocab())
    added = {t.content for t in tok.added_tokens_decoder.values()}
    plain = r.render([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": _PROBE}])
    if _PROBE not in plain:
        raise TemplateError("chat template drops assistant content; nothing could be trained")
    tail = plain[plain.rfind(_PROBE) + len(_PROBE):]
    own = [t for t in added | {tok.eos_token or ""} if t and tail.startswith(t)]
    eots = tuple(dict.fromkeys(sorted(own, key=len, reverse=True)[:1] +
                               [t for t in (tok.eos_token, *KNOWN_EOTS) if t and (t in added or t in vocab)]))
    if not own:
        raise TemplateError(f"chat template ends an assistant turn with {tail[:20]!r}, not an end-of-turn token; "
                            "the model could not learn to stop")
    args_as_string, tool_calls_rendered = _probe_arguments(r)
    user = {"role": "user", "content": "Hi."}
    empty = r.render([user, {"role": "assistant", "content": ""}])
    prompt = r.render([user], gen=True)
    fillers: tuple[str, ...] = ()
    if empty.startswith(prompt):
        pos, _ = find_eot(empty, len(prompt), eots)
        fillers = (empty[len(prompt):pos],) if pos > len(prompt) else ()
    reasoning = r.render([user, {"role": "assistant", "content": "Ans.", "reasoning_content": "Reason7f3a"}])
    failures, unrenderable = _probe_prefix(r, args_as_string)
    return TemplateProfile(eots=eots, args_as_string=args_as_string, tool_calls_rendered=tool_calls_rendered,
                           reasoning_rendered="Reason7f3a" in reasoning, fillers=fillers,
                           prefix_preserving=not failures, prefix_failures=tuple(failures),
                           unrenderable=tuple(unrenderable))


def _probe_arguments(r: Any) -> tuple[bool, bool]:
    """(args_as_string, tool_calls_rendered): prefer the JSON string when the template prints it verbatim."""
    for as_string in (True, False):
        msgs = [{"role": "user", "content": "Hi."},
                {"role": "assistant", "content": "", "tool_calls": [_call('{"probe_arg": 1}' if as_string
                                                                          else {"probe_arg": 1})]}]
        try:
            text = r.render(msgs, [PROBE_TOOL])
        except Exception:  # noqa: BLE001 - e.g. DeepSeek-R1 concatenates the string and fails on a dict
            continue
        if '{"probe_arg": 1}' in text:
            return as_string, True
    return True, False


def _probe_prefix(r: Any, args_as_string: bool) -> tuple[list[str], list[str]]:
    """Check P_i is a prefix of F (as text and as token ids) for every assistant turn of a few probe chats."""
    failures, unrenderable = [], []
    for name, msgs in _probe_conversations(args_as_string).items():
        try:
            full = r.render(msgs, [PROBE_TOOL])
        except Exception as exc:  # noqa: BLE001 - a template refusing a shape is a fact to report
            unrenderable.append(f"{name} ({str(exc)[:80]})")
            continue
        full_ids = r.encode(full).ids
        for n, m in enumerate(j for j, msg in enumerate(msgs) if msg["role"] == "assistant"):
            prompt = r.render(msgs[:m], [PROBE_TOOL], gen=True)
            if not full.startswith(prompt):
                failures.append(f"{name}: step {n + 1}")
            elif full_ids[:len(ids := r.encode(prompt).ids)] != ids:
                failures.append(f"{name}: step {n + 1} (token ids)")
    return failures, unrenderable
