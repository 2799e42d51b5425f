"""A thin wrapper over Hugging Face `tokenizers`: train, save, load, and name special tokens.

Training (character vocabulary, byte-level BPE, WordPiece) is done by `tokenizers`; this module
only chooses the pieces and keeps track of which token plays which role (pad, bos, eos, unk,
mask, cls, sep) so a model config can be filled from it, and of the chat template an instruct
model was trained with. Reading pretrained vocabularies (vocab.txt, GGUF metadata) lives in
`tformer.pretrained.tokenizers`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import (
    Encoding,
    Regex,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers import Tokenizer as Backend

from tformer.config import read_json
from tformer.errors import InputError, MissingFileError

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"  # the Hugging Face name, so both can read it
CONFIG_FILE = "tokenizer_config.json"  # Hugging Face's: special tokens and the chat template
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.43 saves the template
ROLES = ("pad", "bos", "eos", "unk", "mask", "cls", "sep")
# ChatML (SmolLM2's and Qwen's format), for a tokenizer trained here, which has no template
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_TEMPLATES = {"chatml": CHATML_TEMPLATE}  # templates known by name (recipes: chat_template)
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


def bert_text_handling(backend: Backend, *, lowercase: bool, strip_accents: bool | None) -> None:
    """BERT's text handling around a WordPiece model: clean, (lower-case), split on whitespace
    and punctuation."""
    backend.normalizer = normalizers.BertNormalizer(
        lowercase=lowercase, strip_accents=strip_accents
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()


def wrap_cls_sep(backend: Backend, specials: dict[str, str]) -> None:
    """Encodings become [CLS] text [SEP] (and [CLS] a [SEP] b [SEP] for pairs), as in BERT."""
    cls_token, sep_token = specials["cls"], specials["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_token} $A {sep_token}",
        pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
        special_tokens=[(t, backend.token_to_id(t)) for t in (cls_token, sep_token)],
    )


def _roles(values: dict[str, object]) -> dict[str, str]:
    """Special tokens by role from HF-style `<role>_token` keys (strings or {"content": ...})."""
    specials = {}
    for key, token in values.items():
        role = key.removesuffix("_token")
        if key.endswith("_token") and role in ROLES and token:
            specials[role] = str(token["content"] if isinstance(token, dict) else token)
    return specials


class Tokenizer:
    """Text <-> token ids, plus the ids of the special tokens by role."""

    def __init__(
        self,
        backend: Backend,
        special_tokens: dict[str, str],
        chat_template: str | None = None,
    ) -> None:
        unknown = sorted(set(special_tokens) - set(ROLES))
        if unknown:
            raise InputError(
                f"unknown special-token role(s) {unknown}; roles are {', '.join(ROLES)}"
            )
        missing = [token for token in special_tokens.values() if backend.token_to_id(token) is None]
        if missing:
            raise InputError(f"special token(s) {missing} are not in the vocabulary")
        # Padding and truncation are chosen per call (collators, pipelines), never by a file:
        # a tokenizer.json saved by sentence-transformers pads every text to 128 tokens.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.special_tokens = dict(special_tokens)
        self.chat_template = chat_template  # Jinja source, as Hugging Face stores it

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
        show_progress: bool = False,
    ) -> Tokenizer:
        """Byte-level BPE (GPT-2 style): any text encodes, no unknown tokens. `show_progress`:
        the trainer's progress bars, for a terminal (they also print blank lines to stdout)."""
        specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(specials.values()),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
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
        show_progress: bool = False,
    ) -> Tokenizer:
        """BERT's WordPiece; encodings are wrapped as [CLS] text [SEP]. `show_progress`: as
        for `train_bpe`."""
        specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        backend = Backend(models.WordPiece(unk_token=specials["unk"]))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=list(specials.values()),
            show_progress=show_progress,
        )
        bert_text_handling(backend, lowercase=lowercase, strip_accents=None)
        backend.train([str(f) for f in files], trainer)
        wrap_cls_sep(backend, specials)
        return cls(backend, specials)

    # ---- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json, special_tokens_map.json and tokenizer_config.json (the chat
        template) into `directory`, in the files and keys `transformers` reads too."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        roles = {f"{role}_token": token for role, token in self.special_tokens.items()}
        (directory / SPECIAL_TOKENS_FILE).write_text(json.dumps(roles, indent=2) + "\n")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **roles}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a directory (tokenizer.json + special_tokens_map.json) or a tokenizer.json."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise MissingFileError(f"no {TOKENIZER_FILE} at {path}")
        try:
            backend = Backend.from_file(str(file))
        except Exception as error:  # `tokenizers` raises a bare Exception for a bad file
            raise InputError(f"{file}: not a valid {TOKENIZER_FILE} ({error})") from error
        config, specials = read_tokenizer_config(file.parent)
        specials = {k: v for k, v in specials.items() if backend.token_to_id(v) is not None}
        return cls(backend, specials, _chat_template(file.parent, config))

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
        self,
        texts: Sequence[str],
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> list[list[int]]:
        """Ids of each text; with `max_length`, cut to that many ids (special tokens kept)."""
        encodings = self.encodings(
            texts, add_special_tokens=add_special_tokens, max_length=max_length
        )
        return [e.ids for e in encodings]

    def encodings(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        pairs: Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        stride: int = 0,
        is_pretokenized: bool = False,
    ) -> list[Encoding]:
        """The `tokenizers` encodings of `texts` (or of (text, pair) pairs): ids with each
        token's character offsets, word and sequence ids, for pipelines that map predictions
        back onto the text. `is_pretokenized`: each text is a list of words (tagged data).

        With `max_length`, each encoding is cut to that many ids (special tokens kept); for
        pairs only the second text is cut, and the rest of it is in the encoding's
        `overflowing` windows, each overlapping the one before by `stride` tokens (the first
        text whole in every window: question answering over a long context).
        """
        if max_length is not None:
            strategy = "only_second" if pairs is not None else "longest_first"
            self.backend.enable_truncation(max_length, stride=stride, strategy=strategy)
        inputs = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
        try:
            return self.backend.encode_batch(
                inputs, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized
            )
        finally:
            self.backend.no_truncation()

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for a conversation, rendered with the model's own chat template.

        messages: [{"role": "system"|"user"|"assistant", "content": "..."}]. With
        `add_generation_prompt`, the text ends where the assistant's reply should begin.
        """
        if self.chat_template is None:
            raise InputError("this tokenizer has no chat template; give plain text instead")
        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
        )

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


def render_chat_template(
    template: str,
    messages: Sequence[dict[str, str]],
    *,
    add_generation_prompt: bool,
    special_tokens: dict[str, str],
) -> str:
    """`template` (Jinja, as Hugging Face stores chat templates) rendered for `messages`, with
    the special tokens by role as `bos_token`, `eos_token`... A function of its own so that
    fine-tuning data can be rendered before the tokenizer that will read it is trained."""
    roles = {f"{role}_token": token for role, token in special_tokens.items()}
    return _compiled_template(template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, **roles
    )


def _raise_exception(message: str) -> None:  # templates call it to reject a conversation
    raise InputError(f"chat template: {message}")


@functools.lru_cache(maxsize=16)
def _compiled_template(template: str) -> Any:
    """The template compiled once: compiling costs a thousand times a render, and fine-tuning
    data renders each conversation several times (30,000 rows took minutes)."""
    try:  # optional dependency: only chat prompts need a template engine
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("rendering a chat template needs jinja2: pip install jinja2") from error
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template)


def read_tokenizer_config(directory: Path) -> tuple[dict[str, object], dict[str, str]]:
    """tokenizer_config.json's contents and the special tokens (by role) it and
    special_tokens_map.json name; empty when the files are absent."""
    config: dict[str, object] = {}
    if (directory / CONFIG_FILE).is_file():
        config = read_json(directory / CONFIG_FILE)
    specials = _roles(config)
    if (directory / SPECIAL_TOKENS_FILE).is_file():
        specials.update(_roles(read_json(directory / SPECIAL_TOKENS_FILE)))
    return config, specials


def _chat_template(directory: Path, config: dict[str, object]) -> str | None:
    """The template from chat_template.jinja, else tokenizer_config.json (a string, or a list
    of named templates of which "default" is the chat one)."""
    if (directory / CHAT_TEMPLATE_FILE).is_file():
        return (directory / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        template = {t["name"]: t["template"] for t in template}.get("default")
    return template if isinstance(template, str) else None
