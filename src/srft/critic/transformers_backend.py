"""A local Hugging Face model as a critic backend, in-process (for users without a server).

Two decodings:
  free    plain `generate`, requests from concurrent trajectories gathered into batches of `batch_size`
          (left padding); the answer is parsed and re-asked like any server's.
  guided  the JSON skeleton is forced from the answer schema (the expected step numbers), the label of each
          step is the one of the four whose first token the model scores highest, and the reason is generated
          greedily up to `reason_tokens` (stopping at a quote or newline). The answer is valid by construction,
          so even a tiny model labels every step: the in-process analogue of a server's JSON grammar.
          Needs the four labels to start with different tokens (checked at load; use `free` otherwise).
The model loads lazily on the first call, in a worker thread, so the event loop keeps serving the cache.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.critic import Completion, CriticContext
from srft.critic.parse import schema_steps
from srft.model import LABELS


class TransformersConfig(BaseModel):
    """Options of the in-process transformers backend."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="local model folder, or a .gguf file (loaded through transformers' GGUF support)")
    gguf_file: str | None = Field(None, description="GGUF file name inside `model` (when `model` is a folder)")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="weights dtype")
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda, cuda:1")
    decoding: Literal["free", "guided"] = Field("free", description="see module doc")
    batch_size: int = Field(4, ge=1, description="requests per generate() call (free decoding)")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (free decoding only; guided is greedy)")
    max_new_tokens: int | None = Field(None, ge=1, description="answer cap; None = the prompt's window budget")
    reason_tokens: int = Field(24, ge=1, description="tokens per reason (guided decoding)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")


def _model_location(cfg: TransformersConfig) -> tuple[str, str | None]:
    path = Path(cfg.model)
    if path.suffix == ".gguf":
        return str(path.parent), path.name
    return str(path), cfg.gguf_file


class TransformersBackend:
    """A `ChatBackend` running a transformers causal LM in a worker thread."""

    def __init__(self, config: TransformersConfig):
        self.config = config
        folder, gguf = _model_location(config)
        self.id = f"transformers:{gguf or Path(folder).name}"
        self._tok = self._model = None
        self._label_tokens: dict[str, list[int]] = {}
        self._load_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._pending: list[tuple[list[dict[str, Any]], int, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # requests per generate() call, for the report

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        folder, gguf = _model_location(c)
        return {"backend": "transformers", "model": folder, "gguf_file": gguf, "dtype": c.dtype,
                "decoding": c.decoding, "temperature": c.temperature, "max_new_tokens": c.max_new_tokens,
                "reason_tokens": c.reason_tokens if c.decoding == "guided" else None}

    # -- loading ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            folder, gguf = _model_location(self.config)
            kwargs = {"gguf_file": gguf} if gguf else {}
            tok = AutoTokenizer.from_pretrained(folder, **kwargs)
            dtype = "auto" if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs).to(self.config.device)
            model.eval()
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            tok.padding_side = "left"
            self._label_tokens = {lab: tok.encode(lab, add_special_tokens=False) for lab in LABELS}
            firsts = [ids[0] for ids in self._label_tokens.values()]
            if self.config.decoding == "guided" and len(set(firsts)) != len(LABELS):
                raise ValueError(f"guided decoding needs labels that start with different tokens; this tokenizer "
                                 f"gives {self._label_tokens}; use decoding=free")
            self._tok, self._model = tok, model

    def _prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        out = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])

    # -- free decoding: batched generate -----------------------------------------------------------------
    def _generate(self, batch: list[tuple[list[dict[str, Any]], int]]) -> list[Completion]:
        import torch

        self._load()
        tok, model, cfg = self._tok, self._model, self.config
        prompts = [self._prompt_ids(m) for m, _ in batch]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        limit = cfg.max_new_tokens or max(n for _, n in batch)
        sampling = {"do_sample": True, "temperature": cfg.temperature} if cfg.temperature > 0 else {
            "do_sample": False}
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=limit, pad_token_id=tok.pad_token_id, **sampling)
        results = []
        for i, p in enumerate(prompts):
            new = [t for t in out[i, width:].tolist() if t != tok.pad_token_id]
            stopped = tok.eos_token_id in new
            text = tok.decode(new, skip_special_tokens=True)
            results.append(Completion(text, len(p), len(new), "stop" if stopped or len(new) < limit else "length"))
        return results

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self.config.batch_size], self._pending[self.config.batch_size:]
            self.batch_sizes.append(len(batch))
            try:
                done = await asyncio.to_thread(self._generate, [(m, n) for m, n, _ in batch])
            except Exception as exc:  # noqa: BLE001 - hand the error to every waiting caller
                for *_, fut in batch:
                    fut.set_exception(exc)
                continue
            for (*_, fut), completion in zip(batch, done):
                fut.set_result(completion)

    # -- guided decoding --------------------------------------------------------------------------------
    def _guided(self, messages: list[dict[str, Any]], steps: list[int]) -> Completion:
        import torch

        self._load()
        tok, model = self._tok, self._model
        state: dict[str, Any] = {"past": None, "fed": 0}

        def feed(ids: list[int]) -> torch.Tensor:
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids], device=model.device), past_key_values=state["past"],
                            use_cache=True)
            state["past"], state["fed"] = out.past_key_values, state["fed"] + len(ids)
            return out.logits[0, -1]

        enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
        prompt = self._prompt_ids(messages)
        logits = feed(prompt + enc('{"steps": ['))
        answers = []
        for k, number in enumerate(steps):
            logits = feed(enc(("" if k == 0 else '"}, ') + f'{{"step": {number}, "label": "'))
            label = max(LABELS, key=lambda lab: logits[self._label_tokens[lab][0]].item())
            logits = feed(self._label_tokens[label] + enc('", "reason": "'))
            reason_ids: list[int] = []
            tail = ""
            for _ in range(self.config.reason_tokens):
                token = int(logits.argmax())
                piece = tok.decode([token])
                if token == tok.eos_token_id or '"' in piece or "\n" in piece:
                    tail = "" if token == tok.eos_token_id else piece.split('"')[0].split("\n")[0]
                    break
                reason_ids.append(token)
                logits = feed([token])
            answers.append({"step": number, "label": label, "reason": (tok.decode(reason_ids) + tail).strip()})
        text = json.dumps({"steps": answers})
        return Completion(text, len(prompt), state["fed"] - len(prompt), "stop")

    # -- the ChatBackend interface ----------------------------------------------------------------------
    async def complete(self, messages: list[dict[str, Any]], *, schema: dict[str, Any] | None,
                       max_tokens: int) -> Completion:
        if self.config.decoding == "guided" and schema is not None:
            return await asyncio.to_thread(self._guided_locked, messages, schema_steps(schema))
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((messages, max_tokens, fut))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await fut

    def _guided_locked(self, messages: list[dict[str, Any]], steps: list[int]) -> Completion:
        with self._decode_lock:  # one model, one guided decode at a time
            return self._guided(messages, steps)

    async def aclose(self) -> None:
        self._model = self._tok = None


def build(options: dict[str, Any], ctx: CriticContext) -> TransformersBackend:
    return TransformersBackend(TransformersConfig(**options))
