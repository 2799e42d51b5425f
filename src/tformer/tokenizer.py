"""A thin wrapper over Hugging Face `tokenizers`: train, save, load, and name special tokens.

Training (character vocabulary, byte-level BPE, WordPiece) is done by `tokenizers`; this module
only chooses the pieces and keeps track of which token plays which role (pad, bos, eos, unk,
mask, cls, sep) so a model config can be filled from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"  # the Hugging Face name, so both can read it
ROLES = ("pad", "bos", "eos", "unk", "mask", "cls", "sep")
DEFAULT_SPECIAL_TOKENS = {
    "pad": "[PAD]",
    "bos": "[BOS]",
    "eos": "[EOS]",
    "unk": "[UNK]",
    "mask": "[MASK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
}


def _read_texts(files: Sequence[str | Path]) -> Iterable[str]:
    for file in files:
        yield Path(file).read_text(encoding="utf-8")


class Tokenizer:
    """Text <-> token ids, plus the ids of the special tokens by role."""

    def __init__(self, backend: Backend, special_tokens: dict[str, str]) -> None:
        unknown = sorted(set(special_tokens) - set(ROLES))
        if unknown:
            raise ValueError(
                f"unknown special-token role(s) {unknown}; roles are {', '.join(ROLES)}"
            )
        missing = [token for token in special_tokens.values() if backend.token_to_id(token) is None]
        if missing:
            raise ValueError(f"special token(s) {missing} are not in the vocabulary")
        self.backend = backend
        self.special_tokens = dict(special_tokens)

    # ---- training ---------------------------------------------------------------------
    @classmethod
    def train_char(
        cls, files: Sequence[str | Path], special_tokens: dict[str, str] | None = None
    ) -> Tokenizer:
        """One token per distinct character of `files` (newlines and spaces included)."""
        specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        chars = sorted(set().union(*(set(text) for text in _read_texts(files))))
        vocab = {token: i for i, token in enumerate([*specials.values(), *chars])}
        backend = Backend(models.WordLevel(vocab, unk_token=specials.get("unk")))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
        backend.add_special_tokens(list(specials.values()))
        return cls(backend, specials)

    @classmethod
    def train_bpe(
        cls,
        files: Sequence[str | Path],
        vocab_size: int,
        special_tokens: dict[str, str] | None = None,
        min_frequency: int = 2,
    ) -> Tokenizer:
        """Byte-level BPE (GPT-2 style): any text encodes, no unknown tokens."""
        specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(specials.values()),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train([str(f) for f in files], trainer)
        return cls(backend, specials)

    @classmethod
    def train_wordpiece(
        cls,
        files: Sequence[str | Path],
        vocab_size: int,
        *,
        lowercase: bool = True,
        special_tokens: dict[str, str] | None = None,
    ) -> Tokenizer:
        """BERT's WordPiece; encodings are wrapped as [CLS] text [SEP]."""
        specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        backend = Backend(models.WordPiece(unk_token=specials["unk"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(specials.values()), show_progress=False
        )
        backend.train([str(f) for f in files], trainer)
        cls_token, sep_token = specials["cls"], specials["sep"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token} $A {sep_token}",
            pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
            special_tokens=[(t, backend.token_to_id(t)) for t in (cls_token, sep_token)],
        )
        return cls(backend, specials)

    # ---- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and special_tokens_map.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        roles = {f"{role}_token": token for role, token in self.special_tokens.items()}
        (directory / SPECIAL_TOKENS_FILE).write_text(json.dumps(roles, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a directory (tokenizer.json + special_tokens_map.json) or a tokenizer.json."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no {TOKENIZER_FILE} at {path}")
        backend = Backend.from_file(str(file))
        specials: dict[str, str] = {}
        roles_file = file.parent / SPECIAL_TOKENS_FILE
        if roles_file.is_file():
            for key, token in json.loads(roles_file.read_text()).items():
                role = key.removesuffix("_token")
                if role in ROLES:  # Hugging Face files may hold tokens as dicts with "content"
                    specials[role] = token["content"] if isinstance(token, dict) else token
        return cls(backend, specials)

    # ---- use --------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, role: str) -> int | None:
        """Id of the special token playing `role` ("pad", "eos", ...), or None if it has none."""
        token = self.special_tokens.get(role)
        return None if token is None else self.backend.token_to_id(token)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(
        self, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[list[int]]:
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, text: str) -> list[str]:
        """The token strings `text` splits into (for display)."""
        return self.backend.encode(text).tokens

    def config_ids(self) -> dict[str, int | None]:
        """`vocab_size` and special-token ids in ModelConfig's field names."""
        return {
            "vocab_size": self.vocab_size,
            "pad_id": self.token_id("pad"),
            "bos_id": self.token_id("bos"),
            "eos_id": self.token_id("eos"),
            "mask_id": self.token_id("mask"),
        }
