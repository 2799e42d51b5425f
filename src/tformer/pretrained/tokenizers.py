"""Tokenizers of pretrained checkpoints: tokenizer.json, a WordPiece vocab.txt, GGUF metadata.

Each becomes the same `tformer.Tokenizer` (a `tokenizers` pipeline plus special-token roles and
the chat template), so the pipelines and `generate` never care where a tokenizer came from.
`gguf_vocabulary` is the way back to GGUF metadata, for byte-level BPE tokenizers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from tformer.errors import InputError
from tformer.pretrained.split_rules import pre_name, split_rules
from tformer.tokenizer import (
    TOKENIZER_FILE,
    Tokenizer,
    bert_text_handling,
    read_tokenizer_config,
    wrap_cls_sep,
)

VOCAB_FILE = "vocab.txt"
# SentencePiece model files transformers' slow tokenizers read (Marian's source/target pair,
# T5's, XLM-R's, Llama's): tformer reads none of them (sentencepiece is no dependency)
SENTENCEPIECE_FILES = ("source.spm", "target.spm", "spiece.model", "sentencepiece.bpe.model",
                       "tokenizer.model")  # fmt: skip
BERT_SPECIALS = {"unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "mask": "[MASK]"}
# llama.cpp's token types (tokenizer.ggml.token_type)
GGUF_NORMAL, GGUF_CONTROL, GGUF_USER_DEFINED, GGUF_UNUSED = 1, 3, 4, 5


def tokenizer_from_hf_directory(directory: Path) -> Tokenizer | None:
    """tokenizer.json if present, else a WordPiece vocab.txt, else None (no tokenizer).

    A tokenizer kept only in SentencePiece files is an error rather than None: the model would
    load, then read text as token ids, far from where the problem is."""
    if (directory / TOKENIZER_FILE).is_file():
        return Tokenizer.load(directory)
    if (directory / VOCAB_FILE).is_file():
        return wordpiece_from_vocab(directory / VOCAB_FILE)
    spm = [name for name in SENTENCEPIECE_FILES if (directory / name).is_file()]
    if spm:
        raise InputError(
            f"{directory} keeps its tokenizer in SentencePiece files ({', '.join(spm)}), which "
            f"tformer does not read: add a {TOKENIZER_FILE} over the same token ids (transformers "
            "writes one with AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) where it "
            "has a fast tokenizer for the family; for marian it has none)"
        )
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

    model: str  # "gpt2" (byte-level BPE), "llama" (SentencePiece BPE) or "bert" (WordPiece)
    tokens: Sequence[str]
    token_types: Sequence[int] = ()
    merges: Sequence[str] = ()  # "left right" pairs, best first
    scores: Sequence[float] = ()  # SentencePiece: a higher score merges earlier
    special_ids: dict[str, int] = field(default_factory=dict)  # role -> id
    chat_template: str | None = None
    add_bos: bool = False
    add_space_prefix: bool = True
    add_eos: bool = False
    pre: str | None = None  # llama.cpp's name for the pre-tokenizer's split rules


def tokenizer_from_gguf(vocabulary: GGUFVocabulary) -> Tokenizer:
    """A Tokenizer for a GGUF vocabulary; control tokens (<|im_start|>, <s>...) are matched
    whole and count as special, user-defined ones are matched whole but decode like text."""
    builders = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe, "bert": _wordpiece}
    if vocabulary.model not in builders:
        raise InputError(
            f"GGUF tokenizer model {vocabulary.model!r} is not supported; supported: "
            "gpt2 (byte-level BPE), llama (SentencePiece BPE), bert (WordPiece)"
        )
    if vocabulary.model == "bert":  # `gguf`'s converter names [CLS] and [SEP] as bos and eos
        ids = vocabulary.special_ids
        roles = {"cls": ids.get("bos"), "sep": ids.get("eos")}
        ids = {**{r: i for r, i in roles.items() if i is not None}, **ids}
        vocabulary = dataclasses.replace(vocabulary, special_ids=ids)
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
    if vocabulary.add_bos and "bos" in specials and backend.post_processor is None:
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
    """GPT-2's byte-level BPE: text is bytes spelled as printable characters, cut into
    pieces first by the split rules `tokenizer.ggml.pre` names (`split_rules`)."""
    vocab = {token: i for i, token in enumerate(vocabulary.tokens)}
    rules = split_rules(vocabulary.pre)
    model = models.BPE(vocab, _pairs(vocabulary.merges), ignore_merges=rules.ignore_merges)
    backend = Backend(model)
    backend.pre_tokenizer = rules.pre_tokenizer()
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


def _wordpiece(vocabulary: GGUFVocabulary) -> Backend:
    """BERT's WordPiece (uncased). llama.cpp's converter writes a word-initial piece as
    "▁piece" and a continuation as the bare piece (vocab.txt's "##piece"); control tokens
    ([CLS], [SEP], ...) as they are. Encodings become [CLS] text [SEP]."""
    types = list(vocabulary.token_types) or [GGUF_NORMAL] * len(vocabulary.tokens)
    pieces = [
        token if kind == GGUF_CONTROL else token[1:] if token.startswith("▁") else f"##{token}"
        for token, kind in zip(vocabulary.tokens, types, strict=True)
    ]
    tokens = vocabulary.tokens
    specials = {r: tokens[i] for r, i in vocabulary.special_ids.items() if 0 <= i < len(tokens)}
    missing = [role for role in ("unk", "cls", "sep") if role not in specials]
    if missing:
        raise InputError(
            f"the GGUF WordPiece vocabulary names no {', '.join(missing)} token "
            "(tokenizer.ggml.unknown_token_id, bos_token_id, seperator_token_id or eos_token_id)"
        )
    backend = Backend(
        models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token=specials["unk"])
    )
    # llama.cpp lower-cases every WordPiece vocabulary (the file has no casing flag)
    bert_text_handling(backend, lowercase=True, strip_accents=None)
    wrap_cls_sep(backend, specials)
    return backend


def gguf_vocabulary(tokenizer: Tokenizer, vocab_size: int, roles: Sequence[str]) -> GGUFVocabulary:
    """The GGUF description of a byte-level BPE `tokenizer` (GPT-2's, SmolLM2's), the inverse of
    `tokenizer_from_gguf`: ids the model has but the tokenizer lacks (a padded embedding) become
    unused "[PAD<id>]" tokens, as llama.cpp's converter writes them, since llama.cpp needs one
    token per embedding row. `roles`: the special-token roles the file can name."""
    spec = json.loads(tokenizer.backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    pre_type = pre_name(spec.get("pre_tokenizer"))
    if spec["model"]["type"] != "BPE" or spec.get("normalizer") is not None or pre_type is None:
        raise InputError(
            "GGUF export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2's) whose "
            "split rules llama.cpp names; "
            f"this one is {spec['model']['type']} with pre-tokenizer {pre.get('type')!r} "
            f"and normalizer {(spec.get('normalizer') or {}).get('type')!r}"
        )
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    if max(vocab.values()) >= vocab_size:
        raise InputError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model's vocabulary has "
            f"{vocab_size} rows; a GGUF file needs an embedding row for every token"
        )
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [GGUF_UNUSED] * vocab_size
    for token, i in vocab.items():
        tokens[i], types[i] = token, GGUF_NORMAL
    for i, added in tokenizer.backend.get_added_tokens_decoder().items():
        types[i] = GGUF_CONTROL if added.special else GGUF_USER_DEFINED
    ids = {r: tokenizer.token_id(r) for r in roles}
    add_bos, add_eos = _added_around_text(tokenizer, ids)
    return GGUFVocabulary(
        model="gpt2",
        pre=pre_type,
        tokens=tokens,
        token_types=types,
        merges=[m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]],
        special_ids={r: i for r, i in ids.items() if i is not None},
        chat_template=tokenizer.chat_template,
        add_bos=add_bos,
        add_eos=add_eos,
    )


def _added_around_text(tokenizer: Tokenizer, ids: dict[str, int | None]) -> tuple[bool, bool]:
    """Whether encoding puts BOS before and EOS after the text: GGUF has only these two flags
    (tokenizer.ggml.add_bos_token / add_eos_token) for what a post-processor adds."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a")
    bos, eos = ids.get("bos"), ids.get("eos")
    add_bos = bos is not None and full[:1] == [bos] and plain[:1] != [bos]
    add_eos = eos is not None and full[-1:] == [eos] and plain[-1:] != [eos]
    if full[int(add_bos) : len(full) - int(add_eos)] != plain:
        raise InputError(
            f"the tokenizer encodes 'a' as {full} ({plain} without special tokens); a GGUF "
            "file can only say that BOS goes before the text and EOS after it"
        )
    return add_bos, add_eos
