"""Pipelines on real and random pretrained encoders, against `transformers` with the same
weights: all-MiniLM-L6-v2 sentence embeddings, fill-mask, classification, and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from tformer import kernels  # noqa: E402
from tformer.assets import minilm_directory  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.pipelines import classify, cosine_similarity, embed, fill_mask  # noqa: E402
from tformer.pretrained.tokenizers import wordpiece_from_vocab  # noqa: E402

SENTENCES = [
    "",
    "A cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply on Monday.",
    "The central bank raised interest rates.",
    "I love programming in Python.",
    "def add(a, b): return a + b",
    "Grüße aus München! Ça va très bien.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "🙂🚀 emoji only 🎉",
    "   leading and trailing spaces   ",
    "UPPER CASE SENTENCE WITH ACRONYMS LIKE NASA AND UNESCO",
    "numbers: 3.14159, 42, 1,000,000 and 2024-01-01",
    "A very short one",
    "Question? Exclamation! Semicolon; colon: dash - end.",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light energy into chemical energy.",
    "She sells sea shells by the sea shore.",
    "word " * 700,  # > 512 tokens: truncated to the model's 512 positions
    "Transformers use attention to mix information across positions.",
]


def _minilm_dir() -> Path:
    try:
        return minilm_directory()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def minilm() -> tuple[tformer.TformerModel, tformer.Tokenizer]:
    model, tokenizer = tformer.load(_minilm_dir())
    assert tokenizer is not None
    return model, tokenizer


def _reference_embeddings(directory: Path, sentences: list[str]) -> torch.Tensor:
    """transformers BertModel + mean pooling over the attention mask + L2 normalisation."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.BertModel.from_pretrained(directory).eval()
    pooled = []
    for start in range(0, len(sentences), 8):  # batches of 8: only one pads to 512 tokens
        batch = tokenizer(
            sentences[start : start + 8], padding=True, truncation=True, max_length=512,
            return_tensors="pt",
        )  # fmt: skip
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
    return torch.nn.functional.normalize(torch.cat(pooled), dim=-1)


def test_minilm_embeddings_match_transformers_mean_pooling(minilm) -> None:
    ours = embed(*minilm, SENTENCES, batch_size=8)
    theirs = _reference_embeddings(_minilm_dir(), SENTENCES)
    cosines = (ours * theirs).sum(-1)
    assert ours.shape == (len(SENTENCES), 384)
    assert cosines.min().item() >= 0.99999, cosines


def test_minilm_similarity_ranks_paraphrase_above_unrelated(minilm) -> None:
    similarity = cosine_similarity(embed(*minilm, SENTENCES[1:4]))
    assert similarity[0, 1] > 0.5 > similarity[0, 2] + 0.3


def test_too_long_input_is_rejected_when_truncation_is_off(minilm) -> None:
    with pytest.raises(ValueError, match=r"text 1 is \d+ tokens long, more than max_length=512"):
        embed(*minilm, ["short", "word " * 700], truncate=False)


def test_vocab_txt_tokenizer_matches_transformers_bert_tokenizer() -> None:
    ours = wordpiece_from_vocab(_minilm_dir() / "vocab.txt")
    theirs = transformers.BertTokenizer(str(_minilm_dir() / "vocab.txt"), do_lower_case=True)
    for text in SENTENCES[:-2]:
        assert ours.encode(text) == theirs(text)["input_ids"], text


def test_fill_mask_without_mlm_head_says_so(minilm) -> None:
    with pytest.raises(ValueError, match="no masked-LM head"):
        fill_mask(*minilm, "Paris is the [MASK] of France.")


def _small_bert_dir(
    tmp_path: Path, cls_name: str, **config: object
) -> tuple[torch.nn.Module, Path]:
    """A random HF BERT whose vocabulary is MiniLM's (so real text tokenises), with vocab.txt."""
    hf_config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, **config,
    )  # fmt: skip
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(hf_config).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text((_minilm_dir() / "vocab.txt").read_text())
    return model, tmp_path


def test_fill_mask_matches_transformers_masked_lm(tmp_path: Path) -> None:
    reference, directory = _small_bert_dir(tmp_path, "BertForMaskedLM")
    model, tokenizer = tformer.load(directory)
    text = "the [MASK] sat on the [MASK] ."
    ours = fill_mask(model, tokenizer, text, top_k=3)
    hf_tokenizer = transformers.BertTokenizer(str(directory / "vocab.txt"))
    batch = hf_tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        probs = reference(**batch).logits[0].softmax(-1)
    positions = (batch["input_ids"][0] == hf_tokenizer.mask_token_id).nonzero().flatten()
    assert len(ours) == len(positions) == 2
    for candidates, position in zip(ours, positions, strict=True):
        top = probs[position].topk(3)
        assert [t for t, _ in candidates] == hf_tokenizer.convert_ids_to_tokens(top.indices)
        assert torch.allclose(torch.tensor([p for _, p in candidates]), top.values, atol=1e-5)


def test_classify_matches_transformers_with_label_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {0: "sport", 1: "politics", 2: "tech"}
    reference, directory = _small_bert_dir(
        tmp_path,
        "BertForSequenceClassification",
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model, tokenizer = tformer.load(directory)
    texts = ["the match ended in a draw", "parliament passed the bill today"]
    ours = classify(model, tokenizer, texts)
    hf_tokenizer = transformers.BertTokenizer(str(directory / "vocab.txt"))
    with torch.no_grad():
        batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
        probs = reference(**batch).logits.softmax(-1)
    label_ids = {name: i for i, name in labels.items()}
    for ranking, row in zip(ours, probs, strict=True):
        assert [label for label, _ in ranking] == [
            labels[i] for i in row.argsort(descending=True).tolist()
        ]
        for label, p in ranking:
            assert abs(p - row[label_ids[label]].item()) < 1e-5
    assert main(["classify", str(directory), texts[0], "--top-k", "3"]) == 0
    best = ", ".join(f"{label} {p:.3f}" for label, p in ours[0])
    assert capsys.readouterr().out.startswith(best)


def test_embed_and_fill_mask_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(_minilm_dir()), "A cat.", "A kitten."]) == 0
    assert "cosine similarity" in capsys.readouterr().out
    assert main(["fill-mask", str(_minilm_dir()), "Paris is the [MASK] of France."]) == 2
    assert "no masked-LM head" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_embed_command_in_another_precision_stays_close_to_float32(
    precision: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sentences = ["A cat sits on the mat.", "Stock markets fell sharply on Tuesday.", "Hi!"]
    embedded = {}
    for name in ("fp32", precision):
        assert main(["embed", str(_minilm_dir()), *sentences, "--json", "--precision", name]) == 0
        embedded[name] = torch.tensor(json.loads(capsys.readouterr().out)["embeddings"])
    cosines = (embedded["fp32"] * embedded[precision]).sum(-1)
    assert cosines.min() > 0.99  # the bar for a reduced-precision path of ours
    if precision == "bf16" or kernels.bf16_is_fast("cpu"):
        assert not torch.equal(embedded[precision], embedded["fp32"])  # it did run in bf16


def test_convert_command_hf_to_tformer_and_back(tmp_path: Path) -> None:
    reference, directory = _small_bert_dir(tmp_path / "hf", "BertForMaskedLM")
    assert main(["convert", str(directory), str(tmp_path / "native")]) == 0
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "back"), "--to", "hf"]) == 0
    native, tokenizer = tformer.load(tmp_path / "native")
    assert tokenizer is not None and (tmp_path / "native" / "tokenizer.json").is_file()
    reloaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor([tokenizer.encode("a tiny round trip")])
    with torch.no_grad():
        assert (native(ids).logits - reference(input_ids=ids).logits).abs().max() <= 1e-4
        assert (
            reloaded(input_ids=ids).logits - reference(input_ids=ids).logits
        ).abs().max() <= 1e-4
