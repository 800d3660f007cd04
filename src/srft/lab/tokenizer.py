"""The students' tokenizer: byte-level BPE trained on the lab's own conversations, with a ChatML template
that renders tools and tool calls the way Qwen2.5-style templates do.

Rendered conversation (what the mask engine tokenizes and the student generates):

    <|im_start|>system\n{system prompt}\n# Tools\nls()\nread(path)\n...<|im_end|>\n
    <|im_start|>user\n{bug report}<|im_end|>\n
    <|im_start|>assistant\n<tool_call>{"name": "search", "arguments": {"var": "alpha"}}</tool_call><|im_end|>\n
    <|im_start|>tool\n{observation}<|im_end|>\n ...

The assistant turn sits in `{% generation %}` so `apply_chat_template(return_assistant_tokens_mask=True)` works
too; `<|im_end|>` is the end-of-turn (eos) token the student must learn to emit. The template is
prefix-preserving: rendering a conversation's prefix with `add_generation_prompt=True` gives exactly the text the
full render has up to that assistant turn, so training renders and inference prompts agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
EOS, PAD = "<|im_end|>", "<|pad|>"
WORD_PIECES = r"[A-Za-z]+|[0-9]+|[^A-Za-z0-9]+"
# JSON keys fused with their delimiters, one token each: the key of a value is then the single token before
# it, in a tool call and in an observation alike, so copying `"path": "core.py"` from a search hit into an edit
# is one-token induction (find the previous occurrence of this token, copy what followed), which a 2-layer
# student learns in minutes; split into `"`, `path`, `": "` the key would take a two-token match.
KEY_TOKENS = ('{"name": "', '"arguments": {', '"path": "', '"line": ', '"var": "', '"value": ', '"text": "')

CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' or tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- endif %}"
    "{%- if tools %}{{- '\\n# Tools' }}"
    "{%- for tool in tools %}{%- set f = tool.function if tool.function is defined else tool %}"
    "{{- '\\n' + f.name + '(' + (f.parameters.properties | list | join(', ')) + ')' }}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{{- message.content if message.content else '' }}"
    "{%- if message.tool_calls %}{%- for tc in message.tool_calls %}"
    "{%- set f = tc.function if tc.function is defined else tc %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>{\"name\": \"' + f.name + '\", \"arguments\": ' }}"
    "{%- if f.arguments is string %}{{- f.arguments }}{%- else %}{{- f.arguments | tojson }}{%- endif %}"
    "{{- '}</tool_call>' }}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 1024):
    """Train a byte-level BPE on `texts`, attach the chat template, save to `out_dir`; return the tokenizer.

    Deterministic for the same texts (the `tokenizers` BPE trainer is single-pass and ordered)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # Words and numbers are pieces of their own (no leading space glued on, unlike GPT-2's rule), so a name is
    # the same token in the report, in an observation and inside a JSON tool call: copying it is an identity
    # the tiny students can learn from a few hundred trajectories. Runs of other characters (`": "`) merge.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORD_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, bos_token=None,
                                  unk_token=None, additional_special_tokens=[])
    tok.add_tokens([TOOL_CALL_OPEN, TOOL_CALL_CLOSE, *KEY_TOKENS])  # one token each (not special: decoded)
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 4096
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return tok


def render_texts(conversations: list[list], chat_template: str = CHAT_TEMPLATE) -> list[str]:
    """Conversations (lists of `srft.model.Message`) rendered with the lab's tools through `chat_template`."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from srft.lab.env import TOOLS

    return render_jinja_template(conversations=[[m.to_openai() for m in c] for c in conversations], tools=TOOLS,
                                 chat_template=chat_template)[0]
