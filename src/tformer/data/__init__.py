"""Datasets, collators and token files for the training objectives (and fine-tuning data).

`build_task_data(table, ...)` turns a recipe's `[data]` table into a TaskData; the pieces
(memory-mapped token files, windows, MLM masking, length bucketing, readers) are usable alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tformer.data.batching import BucketedBatches, SequentialBatches, ShuffledBatches
from tformer.data.classification import build_classification
from tformer.data.collate import (
    ClassificationCollator,
    MaskedLMCollator,
    Seq2SeqCollator,
    SFTCollator,
    causal_lm_collate,
    pad,
)
from tformer.data.errors import DataError
from tformer.data.language_modeling import build_language_modeling
from tformer.data.loader import BatchStream
from tformer.data.prepare import PreparedCorpus, prepare_corpus
from tformer.data.records import read_records, read_text
from tformer.data.sft import build_sft
from tformer.data.squad import build_squad
from tformer.data.tagging import build_tagging
from tformer.data.task import TaskData
from tformer.data.tokens import open_token_file, write_token_file
from tformer.data.translation import build_copy, build_seq2seq
from tformer.data.windows import TokenWindows
from tformer.errors import ConfigError

Builder = Callable[[dict, Path, list[Path], int], TaskData]
TASKS: dict[str, Builder] = {
    "causal-lm": build_language_modeling,
    "mlm": build_language_modeling,
    "seq2seq": build_seq2seq,
    "copy": build_copy,
    "classification": build_classification,
    "sft": build_sft,
    "ner": build_tagging,
    "qa": build_squad,
}
TASK_ARCH = {
    "causal-lm": "decoder",
    "mlm": "encoder",
    "seq2seq": "encoder-decoder",
    "copy": "encoder-decoder",
    "classification": "encoder",
    "sft": "decoder",
    "ner": "encoder",
    "qa": "encoder",
}


def build_task_data(
    table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int
) -> TaskData:
    """The TaskData for `table["task"]`; relative paths are looked up from the working
    directory, then from each of `base_dirs`."""
    task = table.get("task")
    if task not in TASKS:
        raise ConfigError(f"[data] task={task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task](table, work_dir, base_dirs, max_seq_len)


__all__ = [
    "TASKS",
    "TASK_ARCH",
    "BatchStream",
    "BucketedBatches",
    "ClassificationCollator",
    "DataError",
    "MaskedLMCollator",
    "PreparedCorpus",
    "SFTCollator",
    "Seq2SeqCollator",
    "SequentialBatches",
    "ShuffledBatches",
    "TaskData",
    "TokenWindows",
    "build_task_data",
    "causal_lm_collate",
    "open_token_file",
    "pad",
    "prepare_corpus",
    "read_records",
    "read_text",
    "write_token_file",
]
