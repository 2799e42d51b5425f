"""Tokenizers of pretrained checkpoints: tokenizer.json, a WordPiece vocab.txt, GGUF metadata.

Each becomes the same `tformer.Tokenizer` (a `tokenizers` pipeline plus special-token roles and
the chat template), so the pipelines and `generate` never care where a tokenizer came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from tformer.tokenizer import (
    TOKENIZER_FILE,
    Tokenizer,
    bert_text_handling,
    read_tokenizer_config,
    wrap_cls_sep,
)

VOCAB_FILE = "vocab.txt"
BERT_SPECIALS = {"unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "mask": "[MASK]"}
# llama.cpp's token types (tokenizer.ggml.token_type)
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4


def tokenizer_from_hf_directory(directory: Path) -> Tokenizer | None:
    """tokenizer.json if present, else a WordPiece vocab.txt, else None (no tokenizer)."""
    if (directory / TOKENIZER_FILE).is_file():
        return Tokenizer.load(directory)
    if (directory / VOCAB_FILE).is_file():
        return wordpiece_from_vocab(directory / VOCAB_FILE)
    return None


def wordpiece_from_vocab(vocab_file: Path) -> Tokenizer:
    """BERT's tokenizer from vocab.txt; lower-casing and accent stripping as
    tokenizer_config.json says (`do_lower_case`, default true, like BERT-uncased)."""
    lines = vocab_file.read_text(encoding="utf-8").split("\n")  # not splitlines(): keep \x1c...
    vocab = {token: i for i, token in enumerate(lines[:-1] if lines[-1] == "" else lines)}
    config, specials = read_tokenizer_config(vocab_file.parent)
    specials = {**BERT_SPECIALS, **specials}
    backend = Backend(models.WordPiece(vocab, unk_token=specials["unk"]))
    lowercase = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")
    bert_text_handling(
        backend,
        lowercase=lowercase,
        strip_accents=None if strip_accents is None else bool(strip_accents),
    )
    backend.add_special_tokens(list(specials.values()))
    wrap_cls_sep(backend, specials)
    return Tokenizer(backend, specials)


def byte_level_bpe(
    tokens: Sequence[str],
    merges: Sequence[str],
    token_types: Sequence[int],
    special_ids: dict[str, int],
    chat_template: str | None,
) -> Tokenizer:
    """GPT-2-style byte-level BPE from a GGUF vocabulary (`tokenizer.ggml.model == "gpt2"`).

    Control tokens (<|im_start|>, <|endoftext|>...) are matched whole and count as special;
    user-defined ones are matched whole but decoded like text.
    """
    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    backend = Backend(models.BPE(vocab, pairs))  # type: ignore[arg-type]
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    kinds = list(zip(tokens, token_types, strict=False))  # types may be absent
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in kinds if k == GGUF_CONTROL]
    )
    backend.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, k in kinds if k == GGUF_USER_DEFINED]
    )
    specials = {role: tokens[i] for role, i in special_ids.items() if 0 <= i < len(tokens)}
    return Tokenizer(backend, specials, chat_template)
