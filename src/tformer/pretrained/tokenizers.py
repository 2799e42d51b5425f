"""Tokenizers of pretrained checkpoints: tokenizer.json, a WordPiece vocab.txt, GGUF metadata.

Each becomes the same `tformer.Tokenizer` (a `tokenizers` pipeline plus special-token roles and
the chat template), so the pipelines and `generate` never care where a tokenizer came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from tformer.errors import InputError
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


@dataclass(frozen=True)
class GGUFVocabulary:
    """The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
    tokens: Sequence[str]
    token_types: Sequence[int] = ()
    merges: Sequence[str] = ()  # "left right" pairs, best first
    scores: Sequence[float] = ()  # SentencePiece: a higher score merges earlier
    special_ids: dict[str, int] = field(default_factory=dict)  # role -> id
    chat_template: str | None = None
    add_bos: bool = False
    add_space_prefix: bool = True


def tokenizer_from_gguf(vocabulary: GGUFVocabulary) -> Tokenizer:
    """A Tokenizer for a GGUF vocabulary; control tokens (<|im_start|>, <s>...) are matched
    whole and count as special, user-defined ones are matched whole but decode like text."""
    builders = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}
    if vocabulary.model not in builders:
        raise InputError(
            f"GGUF tokenizer model {vocabulary.model!r} is not supported; supported: "
            "gpt2 (byte-level BPE), llama (SentencePiece BPE)"
        )
    backend = builders[vocabulary.model](vocabulary)
    kinds = list(zip(vocabulary.tokens, vocabulary.token_types, strict=False))  # may be absent
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in kinds if k == GGUF_CONTROL]
    )
    backend.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, k in kinds if k == GGUF_USER_DEFINED]
    )
    tokens = vocabulary.tokens
    specials = {r: tokens[i] for r, i in vocabulary.special_ids.items() if 0 <= i < len(tokens)}
    if vocabulary.add_bos and "bos" in specials:
        bos = specials["bos"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos}:1 $B:1",
            special_tokens=[(bos, vocabulary.special_ids["bos"])],
        )
    return Tokenizer(backend, specials, vocabulary.chat_template)


def _pairs(merges: Sequence[str]) -> list[tuple[str, str]]:
    return [tuple(merge.split(" ", 1)) for merge in merges]  # type: ignore[misc]


def _byte_level_bpe(vocabulary: GGUFVocabulary) -> Backend:
    """GPT-2's byte-level BPE: text is bytes spelled as printable characters."""
    vocab = {token: i for i, token in enumerate(vocabulary.tokens)}
    backend = Backend(models.BPE(vocab, _pairs(vocabulary.merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def merges_from_scores(vocab: dict[str, int], scores: Sequence[float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every split of a piece into two
    pieces of the vocabulary, the higher the piece's score the earlier (ties: longer left,
    then longer right part first, then vocabulary order)."""
    candidates = []
    for piece, index in vocab.items():
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        splits = [(left, right) for left, right in splits if left in vocab and right in vocab]
        splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        candidates += [(left, right, scores[index]) for left, right in splits]
    candidates.sort(key=lambda c: (c[2], len(c[0]), len(c[1])), reverse=True)
    return [(left, right) for left, right, _ in candidates]


def _sentencepiece_bpe(vocabulary: GGUFVocabulary) -> Backend:
    """Llama's SentencePiece BPE: spaces become "▁", one "▁" is put before the text, and a
    character missing from the vocabulary falls back to its UTF-8 bytes (<0x..> tokens)."""
    vocab = {token: i for i, token in enumerate(vocabulary.tokens)}
    merges = _pairs(vocabulary.merges) or merges_from_scores(vocab, vocabulary.scores)
    backend = Backend(models.BPE(vocab, merges, fuse_unk=True, byte_fallback=True))
    prepend = "first" if vocabulary.add_space_prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme=prepend, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocabulary.add_space_prefix:  # drop the space the prefix "▁" decodes to
        steps.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(steps)
    return backend
