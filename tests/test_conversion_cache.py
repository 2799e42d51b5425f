"""The cache of converted GGUF files: a second load reads the converted checkpoint instead of
converting again and gives the same model and tokenizer; a changed file, a damaged entry and
a cache that cannot be written are all handled; TFORMER_CACHE_DIR=off turns it off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("transformers")

import tformer
from test_pretrained_gguf import _llama, _write_gguf
from tformer import kernels
from tformer.pretrained import gguf_file
from tformer.quantize import WeightOnlyLinear


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TFORMER_CACHE_DIR", str(root))
    return root


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The GGUF files actually converted (rather than read from the cache)."""
    converted: list[Path] = []
    real = gguf_file.load_gguf

    def counting(path: Path, **kwargs: object):
        converted.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(gguf_file, "load_gguf", counting)
    return converted


def _gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, _llama())
    return path


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "gguf").iterdir()) if (cache / "gguf").is_dir() else []


@torch.no_grad()
def test_a_second_load_reads_the_converted_model(tmp_path, cache, conversions) -> None:
    path = _gguf(tmp_path)
    first, first_tokenizer = tformer.load(path)
    second, second_tokenizer = tformer.load(path)
    assert conversions == [path] and len(_entries(cache)) == 1
    ids = torch.randint(0, 64, (2, 9))
    assert torch.equal(first(ids).logits, second(ids).logits)
    assert second.config == first.config
    assert first_tokenizer is not None and second_tokenizer is not None
    assert second_tokenizer.encode("abc<|im_end|>") == first_tokenizer.encode("abc<|im_end|>")
    assert second_tokenizer.chat_template == first_tokenizer.chat_template
    bf16, _ = tformer.load(path, dtype=torch.bfloat16)  # another dtype: another entry
    assert next(bf16.parameters()).dtype == torch.bfloat16 and len(conversions) == 2


def test_a_changed_file_is_converted_again_and_replaces_its_entry(
    tmp_path, cache, conversions
) -> None:
    path = _gguf(tmp_path)
    tformer.load(path)
    old = _entries(cache)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was replaced
    tformer.load(path)
    assert len(conversions) == 2
    assert len(_entries(cache)) == 1 and _entries(cache) != old


@torch.no_grad()
def test_a_damaged_entry_is_converted_again(tmp_path, cache, conversions) -> None:
    path = _gguf(tmp_path)
    model, _ = tformer.load(path)
    weights = _entries(cache)[0] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    again, _ = tformer.load(path)
    ids = torch.randint(0, 64, (1, 6))
    assert len(conversions) == 2 and torch.equal(again(ids).logits, model(ids).logits)


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch, conversions) -> None:
    monkeypatch.setenv("TFORMER_CACHE_DIR", "off")
    path = _gguf(tmp_path)
    tformer.load(path)
    tformer.load(path)
    assert len(conversions) == 2


def test_an_unwritable_cache_only_costs_the_speed_up(tmp_path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("TFORMER_CACHE_DIR", str(blocker))
    model, tokenizer = tformer.load(_gguf(tmp_path))
    assert tokenizer is not None and model.config.vocab_size == 64
    assert "not caching the converted tiny.gguf" in capsys.readouterr().err


def _mapped_files() -> set[str]:
    """The files this process has memory-mapped (Linux)."""
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if len(line.split()) > 5}


@torch.no_grad()
def test_a_quantised_load_is_prepared_once_and_memory_mapped_after(
    tmp_path, cache, conversions
) -> None:
    path = _gguf(tmp_path)
    first, first_tokenizer = tformer.load(path, quantize="int4")
    second, second_tokenizer = tformer.load(path, quantize="int4")
    assert conversions == [path] and len(_entries(cache)) == 1
    entry = _entries(cache)[0]
    assert (entry / "layout.json").is_file()
    assert str(entry / "weights.pt") in _mapped_files()  # read in place, not copied
    ids = torch.randint(0, 64, (2, 9))
    assert torch.equal(first(ids).logits, second(ids).logits)
    assert {type(m).__name__ for m in second.modules()} >= {"Int4Linear", "Int8Linear"}
    assert first_tokenizer is not None and second_tokenizer is not None
    assert second_tokenizer.encode("abc<|im_end|>") == first_tokenizer.encode("abc<|im_end|>")


@torch.no_grad()
def test_prepared_dense_copies_come_back_in_their_own_dtype(
    tmp_path, cache, conversions, monkeypatch
) -> None:
    """Where bf16 is emulated the copies for many rows are float32; mapping them back from
    the entry must not convert them to the weight-only dtype with the rest of the model."""
    monkeypatch.setattr(kernels, "dense_copy", lambda device: kernels.DenseCopy(4, torch.float32))
    path = _gguf(tmp_path)
    first, _ = tformer.load(path, quantize="int4", many_rows=True)
    second, _ = tformer.load(path, quantize="int4", many_rows=True)
    assert conversions == [path]
    copies = [m.dense for m in second.modules() if isinstance(m, WeightOnlyLinear)]
    assert copies and all(c is not None and c.dtype == torch.float32 for c in copies)
    ids = torch.randint(0, 64, (1, 9))  # 9 rows: the copies multiply them
    assert torch.equal(first(ids).logits, second(ids).logits)


def test_each_variant_keeps_its_own_entry_until_the_file_changes(
    tmp_path, cache, conversions
) -> None:
    path = _gguf(tmp_path)
    tformer.load(path)
    tformer.load(path, quantize="int4")
    tformer.load(path, quantize="int8")
    tformer.load(path)
    tformer.load(path, quantize="int4")
    assert len(conversions) == 3 and len(_entries(cache)) == 3
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was replaced
    tformer.load(path, quantize="int4")
    assert len(conversions) == 4 and len(_entries(cache)) == 1  # the old file's are gone


@torch.no_grad()
def test_a_damaged_prepared_entry_is_prepared_again(tmp_path, cache, conversions) -> None:
    path = _gguf(tmp_path)
    model, _ = tformer.load(path, quantize="int4")
    weights = _entries(cache)[0] / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    again, _ = tformer.load(path, quantize="int4")
    ids = torch.randint(0, 64, (1, 6))
    assert len(conversions) == 2 and torch.equal(again(ids).logits, model(ids).logits)
