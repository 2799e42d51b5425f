"""Supervised fine-tuning data: chat conversations or prompt/completion pairs, with the loss on
the assistant's (completion's) tokens only, optionally packed several to a row.

A JSONL file holds one example per line, in either of two shapes:

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
    {"prompt": "...", "completion": "..."}

Conversations are rendered with the model's own chat template (or one the recipe names), so
the model learns the format it will be prompted with; prompt/completion pairs are plain text,
as `tformer generate --prompt` feeds them. An example becomes (input ids, labels) shifted by
one as in causal-LM training, with labels IGNORE_INDEX wherever the next token is not the
assistant's: the model is taught to answer, not to write the user's turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tformer.data.collate import SFTCollator, SFTExample
from tformer.data.errors import DataError
from tformer.data.prepare import TOKENIZER_KINDS
from tformer.data.records import read_json_lines
from tformer.data.task import (
    TaskData,
    check_length,
    obtain_tokenizer,
    parse_options,
    read_splits,
    resolve_path,
)
from tformer.errors import ConfigError
from tformer.models.heads import IGNORE_INDEX
from tformer.tokenizer import (
    CHAT_TEMPLATES,
    DEFAULT_SPECIAL_TOKENS,
    Tokenizer,
    render_chat_template,
)

CHAT_ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content")
Row = tuple[int, dict[str, Any]]  # (line number, validated JSON object)


@dataclass
class SFTOptions:
    """`[data]` of task = "sft".

    path: the training JSONL file; val_path: a validation one, else a seeded `val_fraction`
    of `path`'s rows. tokenizer: a path (a tokenizer.json, or the checkpoint fine-tuned from)
    or "bpe"/"char"/"wordpiece" trained on the rendered training rows. chat_template: a Jinja
    template, or "chatml"; default: the tokenizer's own. block_size: input tokens per example
    (or per packed row); default: the model's max_seq_len. pack: several examples per row,
    each attending to itself only (block-diagonal mask, positions restarting at 0).
    truncate: cut over-long examples to block_size instead of refusing them.
    """

    task: str
    path: str
    val_path: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    tokenizer: str = "bpe"
    vocab_size: int = 8000
    chat_template: str | None = None
    block_size: int | None = None
    pack: bool = False
    truncate: bool = False


def read_sft_rows(path: Path) -> list[Row]:
    """The rows of an SFT JSONL file, each checked to be a usable conversation or
    prompt/completion pair; the first bad one is a DataError naming its line."""
    rows = []
    for line, row in read_json_lines(path):
        if "messages" in row:
            _check_conversation(row, path, line)
        else:
            _check_prompt_completion(row, path, line)
        rows.append((line, row))
    if not rows:
        raise DataError(path, "no examples (the file holds only blank lines)")
    return rows


def _check_conversation(row: dict[str, Any], path: Path, line: int) -> None:
    extra = sorted(set(row) - {"messages"})
    if extra:
        raise DataError(path, f"unknown key(s) {', '.join(extra)} next to 'messages'", line)
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(path, "'messages' must be a non-empty list of {role, content}", line)
    for number, message in enumerate(messages, start=1):
        where = f"message {number}"
        if not isinstance(message, dict):
            raise DataError(path, f"{where} is not an object with role and content", line)
        missing = [k for k in MESSAGE_KEYS if k not in message]
        if missing:
            raise DataError(path, f"{where} has no {' or '.join(missing)}", line)
        extra = sorted(set(message) - set(MESSAGE_KEYS))
        if extra:
            raise DataError(path, f"{where} has unknown key(s) {', '.join(extra)}", line)
        if message["role"] not in CHAT_ROLES:
            raise DataError(
                path,
                f"{where} has role {message['role']!r}; use one of {', '.join(CHAT_ROLES)}",
                line,
            )
        if not isinstance(message["content"], str):
            raise DataError(path, f"{where}'s content must be a string", line)
        if message["role"] == "assistant" and not message["content"].strip():
            raise DataError(path, f"{where} is an empty assistant turn: nothing to learn", line)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(path, "the conversation has no assistant turn: nothing to learn", line)


def _check_prompt_completion(row: dict[str, Any], path: Path, line: int) -> None:
    if set(row) != {"prompt", "completion"}:
        raise DataError(
            path,
            f"a row needs 'messages', or 'prompt' and 'completion'; found {', '.join(row)}",
            line,
        )
    if not all(isinstance(row[k], str) for k in ("prompt", "completion")):
        raise DataError(path, "prompt and completion must be strings", line)
    if not row["completion"].strip():
        raise DataError(path, "the completion is empty: nothing to learn", line)


def conversation_tokens(
    tokenizer: Tokenizer, messages: Sequence[dict[str, str]], path: Path, line: int
) -> tuple[list[int], list[bool]]:
    """The conversation's ids and, per id, whether it belongs to an assistant turn.

    The template alone knows where a turn starts and ends, so each assistant turn is found
    by rendering: the conversation before it with the generation prompt (where the reply
    begins) and the conversation through it (where the reply, end-of-turn tokens included,
    ends). Both must tokenize to prefixes of the whole conversation's ids, else the turn has
    no clean token boundary and the row is refused rather than guessed at.
    """
    ids = _encode(tokenizer, messages, add_generation_prompt=False)
    trained = [False] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _encode(tokenizer, messages[:turn], add_generation_prompt=True)
        end = _encode(tokenizer, messages[: turn + 1], add_generation_prompt=False)
        if end[: len(start)] != start or ids[: len(end)] != end:
            raise DataError(
                path,
                f"message {turn + 1}: the chat template's rendering up to this turn does not "
                "tokenize to a prefix of the whole conversation (the template rewrites earlier "
                "turns, or tokens merge across the boundary); use prompt/completion rows or "
                "another chat_template",
                line,
            )
        trained[len(start) : len(end)] = [True] * (len(end) - len(start))
    return ids, trained


def _encode(
    tokenizer: Tokenizer, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool
) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    return tokenizer.encode(text, add_special_tokens=False)  # the template writes its specials


def prompt_completion_tokens(
    tokenizer: Tokenizer, prompt: str, completion: str
) -> tuple[list[int], list[bool]]:
    """prompt ids (with the tokenizer's own special tokens, as a plain generation prompt is
    encoded) + completion ids + EOS where the tokenizer has one, so the model learns to stop;
    the completion and the EOS are trained."""
    prompt_ids = tokenizer.encode(prompt)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    eos = tokenizer.token_id("eos")
    completion_ids += [eos] if eos is not None else []
    return prompt_ids + completion_ids, [False] * len(prompt_ids) + [True] * len(completion_ids)


def to_example(
    ids: list[int], trained: list[bool], block_size: int, path: Path, line: int, truncate: bool
) -> SFTExample:
    """(inputs, labels) shifted by one, labels IGNORE_INDEX where the next token is not
    trained; at most block_size inputs (cut if `truncate`, else a DataError)."""
    inputs = check_length(ids[:-1], block_size, path, line, truncate)
    labels = [t if keep else IGNORE_INDEX for t, keep in zip(ids[1:], trained[1:], strict=True)]
    labels = labels[: len(inputs)]
    if all(label == IGNORE_INDEX for label in labels):
        raise DataError(
            path,
            f"no assistant/completion token is left within {block_size} tokens; raise "
            "max_seq_len (or block_size) or shorten the prompt",
            line,
        )
    return inputs, labels


def pack_examples(examples: Sequence[SFTExample], block_size: int) -> list[list[SFTExample]]:
    """Consecutive examples grouped into rows of at most block_size input tokens (next fit:
    a row is closed when the next example does not fit). Without packing, one per row."""
    packs: list[list[SFTExample]] = []
    used = block_size + 1  # no open row yet
    for example in examples:
        if used + len(example[0]) > block_size:
            packs.append([])
            used = 0
        packs[-1].append(example)
        used += len(example[0])
    return packs


def training_text(row: dict[str, Any], template: str | None) -> str:
    """What a tokenizer trained for this data should see of a row: the rendered conversation
    (with the special tokens a trained tokenizer has), or prompt + completion."""
    if "messages" not in row:
        return row["prompt"] + row["completion"]
    assert template is not None
    return render_chat_template(
        template,
        row["messages"],
        add_generation_prompt=False,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
    )


def sft_tokenizer(options: SFTOptions, rows: list[Row], base_dirs: list[Path]) -> Tokenizer:
    """The tokenizer the options name (trained on `rows` for a kind), with the chat template
    they name if any; conversations with no template at all are a ConfigError."""
    template = options.chat_template
    template = CHAT_TEMPLATES.get(template, template) if template is not None else None
    has_chats = any("messages" in row for _, row in rows)
    trained = options.tokenizer in TOKENIZER_KINDS
    if has_chats and template is None and trained:
        raise ConfigError(
            f"[data] a tokenizer trained here has no chat template; set chat_template = "
            f'"chatml" (or a Jinja template) to render the conversations of {options.path}'
        )
    texts = [training_text(row, template) for _, row in rows] if trained else []
    tokenizer = obtain_tokenizer(options.tokenizer, texts, options.vocab_size, base_dirs)
    if template is not None:
        tokenizer.chat_template = template  # saved with the checkpoints: `generate --chat`
    elif has_chats and tokenizer.chat_template is None:
        raise ConfigError(
            f"[data] tokenizer {options.tokenizer} has no chat template; set chat_template "
            '= "chatml" (or a Jinja template) to render the conversations'
        )
    return tokenizer


def encode_rows(
    tokenizer: Tokenizer, rows: list[Row], path: Path, block_size: int, truncate: bool
) -> list[SFTExample]:
    examples = []
    for line, row in rows:
        if "messages" in row:
            ids, trained = conversation_tokens(tokenizer, row["messages"], path, line)
        else:
            ids, trained = prompt_completion_tokens(tokenizer, row["prompt"], row["completion"])
        examples.append(to_example(ids, trained, block_size, path, line, truncate))
    return examples


def build_sft(table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int) -> TaskData:
    """task = "sft": a decoder LM trained on the assistant/completion tokens of a JSONL file."""
    options = parse_options(SFTOptions, table, "[data]")
    path = resolve_path(options.path, base_dirs)
    train_rows, val_rows, val_file = read_splits(
        read_sft_rows, path, options.val_path, options.val_fraction, options.seed, base_dirs
    )
    tokenizer = sft_tokenizer(options, train_rows, base_dirs)
    block = min(options.block_size or max_seq_len, max_seq_len)

    def rows_of(split: list[Row], file: Path) -> list[list[SFTExample]]:
        examples = encode_rows(tokenizer, split, file, block, options.truncate)
        return pack_examples(examples, block) if options.pack else [[e] for e in examples]

    train = rows_of(train_rows, path)
    fields = tokenizer.config_ids()
    return TaskData(
        "sft",
        train,
        rows_of(val_rows, val_file),
        SFTCollator(fields["pad_id"] or 0, packed=options.pack),
        fields,
        tokenizer,
        train_lengths=[sum(len(inputs) for inputs, _ in pack) for pack in train],
    )
