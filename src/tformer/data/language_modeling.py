"""Causal-LM and masked-LM data: a corpus prepared into token files, cut into windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tformer.data.collate import MaskedLMCollator, causal_lm_collate
from tformer.data.prepare import PreparedCorpus, prepare_corpus, prepared_matches
from tformer.data.task import TaskData, parse_options, resolve_path
from tformer.data.windows import TokenWindows
from tformer.errors import ConfigError


@dataclass
class CorpusOptions:
    """`[data]` of task = "causal-lm" / "mlm": `path` (raw text/table) or `prepared` (dir)."""

    task: str
    path: str | None = None
    prepared: str | None = None
    tokenizer: str = "char"
    vocab_size: int | None = None
    val_fraction: float = 0.1
    text_column: str = "text"
    block_size: int | None = None  # default: the model's max_seq_len
    train_stride: int | None = None  # default: block_size (disjoint blocks); 1: every offset
    mask_prob: float = 0.15  # mlm only


def load_corpus(options: CorpusOptions, work_dir: Path, base_dirs: list[Path]) -> PreparedCorpus:
    """The prepared corpus named by `prepared`, or `path` prepared into work_dir/data once."""
    if options.prepared is not None:
        return PreparedCorpus(resolve_path(options.prepared, base_dirs))
    if options.path is None:
        raise ConfigError(f"[data] of task={options.task!r} needs `path` or `prepared`")
    source = resolve_path(options.path, base_dirs)
    out = work_dir / "data"
    settings = {
        "source": str(source),
        "tokenizer": options.tokenizer,
        "val_fraction": options.val_fraction,
    }
    if options.vocab_size is not None:
        settings["vocab_size"] = options.vocab_size
    if prepared_matches(out, **settings):
        return PreparedCorpus(out)
    return prepare_corpus(
        source,
        out,
        tokenizer=options.tokenizer,
        vocab_size=options.vocab_size,
        val_fraction=options.val_fraction,
        text_column=options.text_column,
    )


def build_language_modeling(
    table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int
) -> TaskData:
    """task = "causal-lm": windows of block_size + 1 tokens, shifted into inputs and labels;
    task = "mlm": windows of block_size tokens, BERT-masked by the collator."""
    options = parse_options(CorpusOptions, table, "[data]")
    corpus = load_corpus(options, work_dir, base_dirs)
    tokenizer = corpus.tokenizer
    block = options.block_size or max_seq_len
    window = block + 1 if options.task == "causal-lm" else block
    train = TokenWindows(corpus.tokens("train"), window, options.train_stride or block)
    val = TokenWindows(corpus.tokens("val"), window, block)
    fields = tokenizer.config_ids()
    if options.task == "causal-lm":
        return TaskData(options.task, train, val, causal_lm_collate, fields, tokenizer)
    mask_id = tokenizer.token_id("mask")
    if mask_id is None:
        raise ConfigError("task='mlm' needs a tokenizer with a [MASK] token")
    specials = [tokenizer.token_id(role) for role in tokenizer.special_tokens]
    collate = MaskedLMCollator(
        mask_id,
        tokenizer.vocab_size,
        [i for i in specials if i is not None],
        pad_id=fields["pad_id"] or 0,
        mask_prob=options.mask_prob,
    )
    return TaskData(options.task, train, val, collate, fields, tokenizer)
