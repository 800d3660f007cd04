"""Chat-template rendering and step location: the text half of the mask engine (`srft.dataset.masks` is the token half).

Definitions (char offsets into the rendered conversation F = the template's own render of all messages):
  P_i     = render(messages before step i, add_generation_prompt=True): what the model sees at inference.
  step i's trained text = F[start_i, end_i): from the end of P_i to the end of the step's end-of-turn token,
            minus any text the template inserts there by itself (e.g. Qwen3's empty `<think>\\n\\n</think>\\n\\n`).
            It is the text the template renders for the step (Llama 3.1 drops the content of a tool-call message,
            so it is not there), never a role header, never system/user/tool text.
A template is prefix-preserving when every P_i is a prefix of F; then one render serves every step.

Locating steps without O(n^2) work: each step is rendered in a small window (see `_window`) whose text is
checked character by character against F at the expected offset. Only where that fails is P_i rendered (O(n));
if P_i is not a prefix of F the step is located by the best evidence and flagged `mismatch` (its context in F
differs from inference; e.g. DeepSeek-R1's second tool-call round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from srft.dataset.template import PROBE_TOOL, TemplateError, TemplateProfile, find_eot, load_tokenizer, probe
from srft.model import Trajectory

__all__ = ["Renderer", "StepLoc", "TemplateError", "TemplateProfile", "load_tokenizer", "locate_steps",
           "template_message"]

@dataclass
class StepLoc:
    """Where one assistant turn's trained text lies in a render (char offsets)."""

    index: int          # position among the assistant messages of the rendered conversation (0-based)
    start: int
    end: int
    status: str         # local (window-checked) | exact (P_i checked) | mismatch (context differs from P_i)
    filler: str = ""    # template-inserted text skipped at the start


class Renderer:
    """A tokenizer + chat template + template kwargs, with its probed profile."""

    def __init__(self, tokenizer, template_kwargs: dict[str, Any] | None = None):
        self.tok = tokenizer
        self.kwargs = dict(template_kwargs or {})
        self._template_vars = {**tokenizer.special_tokens_map, **self.kwargs}
        self._compiled = {with_tools: _compiled_template(tokenizer, with_tools) for with_tools in (False, True)}
        cache = tokenizer.__dict__.setdefault("_srft_profiles", {})
        key = repr(sorted(self.kwargs.items()))
        if key not in cache:
            cache[key] = probe(self)
        self.profile: TemplateProfile = cache[key]

    def render(self, messages: list[dict], tools: list[dict] | None = None, gen: bool = False) -> str:
        """The template's render through `apply_chat_template`: the reference every located span is checked on."""
        return self.tok.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                            add_generation_prompt=gen, **self.kwargs)

    def quick_render(self, messages: list[dict], tools: list[dict] | None = None, gen: bool = False) -> str:
        """The same compiled template without `apply_chat_template`'s per-call input copying (~5x faster on
        small windows). Only used for window renders, whose text is verified against `render` output."""
        compiled = self._compiled[bool(tools)]
        if compiled is None:
            return self.render(messages, tools, gen)
        return compiled.render(messages=messages, tools=tools or None, documents=None, add_generation_prompt=gen,
                               **self._template_vars)

    def encode(self, text: str):
        """A `tokenizers.Encoding` (ids, char<->token maps), exactly as `apply_chat_template(tokenize=True)`
        tokenizes the render (no special tokens added: the template writes BOS itself)."""
        return self.tok.backend_tokenizer.encode(text, add_special_tokens=False)

    def messages(self, traj: Trajectory) -> list[dict[str, Any]]:
        """The trajectory's messages in the shape this template expects (tool-call arguments as str or dict)."""
        return [template_message(m.to_openai(), self.profile.args_as_string) for m in traj.messages]


def _compiled_template(tokenizer, with_tools: bool):
    """transformers' compiled (sandboxed, cached) template -- the one `apply_chat_template` picks with or
    without tools -- or None when its private helper is unavailable."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        return _compile_jinja_template(tokenizer.get_chat_template(None, [PROBE_TOOL] if with_tools else None))
    except Exception:  # noqa: BLE001 - any change upstream just means the slower public path
        return None


def template_message(msg: dict[str, Any], args_as_string: bool) -> dict[str, Any]:
    """Copy of an OpenAI message with tool-call arguments as the template wants them. Arguments that are not a
    JSON object stay a string (the template renders them as it can)."""
    import json

    if msg.get("reasoning_content") is not None:
        msg = {**msg, "thinking": msg["reasoning_content"]}  # as apply_chat_template aliases it (gpt-oss reads it)
    if not msg.get("tool_calls"):
        return msg
    calls = []
    for tc in msg["tool_calls"]:
        args = tc["function"]["arguments"]
        if not args_as_string and isinstance(args, str):
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError:
                parsed = None
            args = parsed if isinstance(parsed, dict) else args
        call = {"type": tc.get("type") or "function", "function": {"name": tc["function"]["name"], "arguments": args}}
        if tc.get("id") is not None:
            call["id"] = tc["id"]
        calls.append(call)
    return {**msg, "tool_calls": calls}


# -- locating steps -------------------------------------------------------------------------------------------

def _first_eot(text: str, start: int, eots: tuple[str, ...]) -> int:
    """End offset of the first end-of-turn string at or after `start`, or -1."""
    pos, eot = find_eot(text, start, eots)
    return pos + len(eot) if pos >= 0 else -1


def _lcp(a: str, b: str) -> int:
    """Length of the common prefix (binary search on C-level slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class _Ctx:
    r: Renderer
    msgs: list[dict]
    tools: list[dict] | None
    text: str
    assistants: list[int]
    head: list[dict] = field(default_factory=list)  # messages before the first assistant turn
    head_gen: str | None = None                     # render(head, gen=True)
    light: bool = True                              # try windows with a placeholder head and no tools first
    head_gens: dict[bool, str] = field(default_factory=dict)  # window head renders, light (True) and full


def locate_steps(r: Renderer, msgs: list[dict], tools: list[dict] | None = None, *, exact: frozenset[int] = frozenset(),
                 fallback: bool = True) -> tuple[str, list[StepLoc]]:
    """Render `msgs` once and find every assistant turn's trained text in it.

    `exact`: assistant positions that must be checked against their own P_i (per-step samples check their last
    step). `fallback=False` skips steps whose window check fails instead of rendering their P_i (they are left
    out of the result). Raises whatever the template raises (e.g. Llama 3.1 on parallel tool calls).
    """
    text = r.render(msgs, tools)
    assistants = [j for j, m in enumerate(msgs) if m["role"] == "assistant"]
    ctx = _Ctx(r, msgs, tools, text, assistants, head=msgs[:assistants[0]] if assistants else [])
    if ctx.head:
        ctx.head_gen = r.render(ctx.head, tools, gen=True)
    locs: list[StepLoc] = []
    prev_end = 0
    for k in range(len(assistants)):
        loc = None if k in exact else _window(ctx, k, prev_end if locs and locs[-1].index == k - 1 else None)
        if loc is None and (fallback or k in exact):
            loc = _exact(ctx, k, prev_end)
        if loc is None:
            continue
        locs.append(_skip_filler(loc, text, r.profile))
        prev_end = loc.end
    return text, locs


def _window(ctx: _Ctx, k: int, prev_end: int | None) -> StepLoc | None:
    """Locate step k from a small window render; None unless the window's text matches F exactly.

    The window is [head] + previous step + its observations (+ generation prompt), and the same + step k + a
    placeholder for its first observation. A light window (placeholder head, no tool schemas: cheap) is tried
    first; once a full window succeeds where a light one failed, this trajectory uses full windows only."""
    text, eots = ctx.text, ctx.r.profile.eots
    if k == 0:
        if ctx.head_gen is None or not text.startswith(ctx.head_gen):
            return None
        end = _first_eot(text, len(ctx.head_gen), eots)
        return StepLoc(k, len(ctx.head_gen), end, "exact") if end >= len(ctx.head_gen) else None
    if prev_end is None or ctx.head_gen is None:
        return None
    if ctx.light:
        head = [{"role": m["role"], "content": "x"} for m in ctx.head]
        found = _try_window(ctx, k, prev_end, head, None, ctx.r.quick_render)
        if found is not None:
            return found
    found = _try_window(ctx, k, prev_end, ctx.head, ctx.tools, ctx.r.quick_render)
    if found is not None and ctx.light:
        ctx.light = False
    return found


def _try_window(ctx: _Ctx, k: int, prev_end: int, head: list[dict], tools: list[dict] | None,
                render: Any) -> StepLoc | None:
    msgs, text, eots = ctx.msgs, ctx.text, ctx.r.profile.eots
    p, m = ctx.assistants[k - 1], ctx.assistants[k]
    try:
        key = tools is None
        if key not in ctx.head_gens:
            ctx.head_gens[key] = render(head, tools, True)
        head_gen = ctx.head_gens[key]
        ra = render(head + msgs[p:m], tools, True)
        # what follows step k only matters through its role (e.g. Qwen3 renders a last turn differently), so one
        # placeholder message stands in for the observations
        after = [{**msgs[m + 1], "content": "x"}] if m + 1 < len(msgs) else []
        rb = render(head + msgs[p:m + 1] + after, tools, False)
    except Exception:  # noqa: BLE001 - a template may refuse the window; the exact path decides
        return None
    if not (ra.startswith(head_gen) and rb.startswith(ra)):
        return None
    prev_eot = _first_eot(ra, len(head_gen), eots)
    step_eot = _first_eot(rb, len(ra), eots)
    if prev_eot < 0 or step_eot < 0:
        return None
    gap, step = ra[prev_eot:], rb[len(ra):step_eot]
    start = prev_end + len(gap)
    if text[prev_end:start] != gap or text[start:start + len(step)] != step:
        return None
    return StepLoc(k, start, start + len(step), "local")


def _exact(ctx: _Ctx, k: int, prev_end: int) -> StepLoc | None:
    """Locate step k from its own P_i (O(prefix) render); flag `mismatch` when P_i is not a prefix of F."""
    r, msgs, text, eots = ctx.r, ctx.msgs, ctx.text, ctx.r.profile.eots
    m = ctx.assistants[k]
    if m == 0:  # a conversation opening with an assistant turn: its header is whatever precedes its text
        prompt, bare = "", ""
    else:
        prompt = r.render(msgs[:m], ctx.tools, gen=True)
        bare = r.render(msgs[:m], ctx.tools)
    if text.startswith(prompt):
        end = _first_eot(text, len(prompt), eots)
        return StepLoc(k, len(prompt), end, "exact") if end >= len(prompt) else None
    start = max(_lcp(prompt, text), prev_end)
    header = prompt[len(bare):] if prompt.startswith(bare) else ""
    if header:
        pos = text.find(header, prev_end)
        if pos >= 0 and pos + len(header) > start:
            start = pos + len(header)
    end = _first_eot(text, start, eots)
    return StepLoc(k, start, end, "mismatch") if end >= start else None


def _skip_filler(loc: StepLoc, text: str, profile: TemplateProfile) -> StepLoc:
    for filler in profile.fillers:
        if text.startswith(filler, loc.start) and loc.start + len(filler) <= loc.end:
            return StepLoc(loc.index, loc.start + len(filler), loc.end, loc.status, filler)
    return loc


