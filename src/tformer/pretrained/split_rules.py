"""llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`) as `tokenizers` pipelines, both ways.

A byte-level BPE vocabulary is half a tokenizer: text is first cut into pieces by regular
expressions, and no merge crosses a cut. So the same vocabulary tokenises "2024" as one token
under GPT-2's rules and as four under SmolLM2's, which cut every digit off first. A GGUF file
names its rules in `tokenizer.ggml.pre`; llama.cpp (llama-vocab.cpp) maps the name to a list
of regular expressions applied in turn, each cutting the pieces the previous one left, and
keeps what lies between matches as pieces too. Here each expression becomes a `Split` that
keeps matches and gaps ("isolated"), followed by the byte-level mapping; GPT-2's rules are
the byte-level pre-tokenizer's own expression, as tformer builds byte-level BPE everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from tformer.errors import InputError

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_REST = r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _words_then(digits: str) -> str:
    """Llama 3's and Qwen2's expression, which differ only in how many digits stay together."""
    return rf"{_CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{digits}|{_REST}"


@dataclass(frozen=True)
class SplitRules:
    """One of llama.cpp's pre-tokenizer types: the names GGUF files give it, its expressions
    (none: GPT-2's, the byte-level pre-tokenizer's own) and whether a piece that is itself a
    token is taken whole before merging (llama.cpp's and transformers' `ignore_merges`)."""

    names: tuple[str, ...]
    expressions: tuple[str, ...] = ()
    ignore_merges: bool = False

    def pre_tokenizer(self) -> pre_tokenizers.PreTokenizer:
        if not self.expressions:
            return pre_tokenizers.ByteLevel(add_prefix_space=False)
        return pre_tokenizers.Sequence(
            [
                *(pre_tokenizers.Split(Regex(e), behavior="isolated") for e in self.expressions),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )


RULES = (
    SplitRules(("gpt-2", "phi-2")),
    SplitRules(("smollm", "starcoder", "refact", "command-r"), (r"\p{N}", _GPT2)),
    SplitRules(
        ("llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"),
        (_words_then(r"\p{N}{1,3}"),),
        ignore_merges=True,
    ),
    SplitRules(("qwen2", "deepseek-r1-qwen"), (_words_then(r"\p{N}"),)),
)
GPT2_RULES = RULES[0]


def split_rules(pre: str | None) -> SplitRules:
    """The rules `tokenizer.ggml.pre` names; a file without the key gets GPT-2's."""
    if pre is None:
        return GPT2_RULES
    found = next((rules for rules in RULES if pre in rules.names), None)
    if found is None:
        known = ", ".join(name for rules in RULES for name in rules.names)
        raise InputError(
            f"GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; tformer splits "
            f"text as llama.cpp does for: {known}"
        )
    return found


def pre_name(pre_tokenizer: dict | None) -> str | None:
    """The `tokenizer.ggml.pre` name of a byte-level BPE tokenizer's split rules, given its
    tokenizer.json `pre_tokenizer` entry (the first name of the rules it was built with), or
    None if they are none of `RULES`."""
    return next(
        (r.names[0] for r in RULES if _serialised(r.pre_tokenizer()) == pre_tokenizer), None
    )


def _serialised(pre_tokenizer: pre_tokenizers.PreTokenizer) -> dict:
    """A pre-tokenizer as tokenizer.json holds it (on an empty tokenizer: cheap)."""
    probe = Backend(models.BPE())
    probe.pre_tokenizer = pre_tokenizer
    return json.loads(probe.to_str())["pre_tokenizer"]
