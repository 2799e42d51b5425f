"""GGUF import of llama.cpp's `bert` architecture (sentence-embedding encoders such as
all-MiniLM): a file written here as llama.cpp's converter writes one -- tensor names from the
`gguf` package's own name map, the WordPiece vocabulary in its "▁word" / "piece" spelling,
[CLS]/[SEP] as bos/eos -- loads as transformers' BertModel holding the weights the file
stores, and its tokenizer encodes as transformers' BertTokenizer of the original vocab.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

import tformer  # noqa: E402
from hf_parity import assert_close, randomise, run_hf, run_tformer  # noqa: E402
from tformer import CheckpointError  # noqa: E402
from tformer.pipelines.embed import embed  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "play", "run", "un", "a", "b", "c", "é", "我"]
PIECES = ["##s", "##ing", "##ed", "##a", "##t", "##b", "##c", ",", ".", "!", "[unused0]"]
VOCAB = SPECIALS + WORDS + PIECES
TEXTS = ["the cat sat on the mat.", "Cats PLAYING, runs!", "unplayed abc", "", "我 cat",
         "héllo café", "the [MASK] sat", "  spaces\tand\nnewlines  "]  # fmt: skip


def _bert(**settings: object) -> torch.nn.Module:
    """A random BertModel of odd shapes: head_dim 12, 3 segment types, every weight perturbed."""
    config = transformers.BertConfig(**{
        "vocab_size": len(VOCAB), "hidden_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 80, "max_position_embeddings": 40,
        "type_vocab_size": 3, "layer_norm_eps": 1e-12, "pad_token_id": 0, **settings,
    })  # fmt: skip
    torch.manual_seed(0)
    return randomise(transformers.BertModel(config))


def _llama_cpp_token(token: str, i: int) -> str:
    """llama.cpp's converter's spelling: control tokens whole, "##piece" -> "piece",
    any other token -> "▁token" (a word start)."""
    if i < len(SPECIALS):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def _write_gguf(
    path: Path, model: torch.nn.Module, pooling: int = 1, causal: bool = False
) -> dict[str, torch.Tensor]:
    """`model` as llama.cpp's converter writes a BertModel (matrices F16, the rest F32);
    returns the weights the file holds, by Hugging Face name."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_head_count(c.num_attention_heads)
    writer.add_layer_norm_eps(c.layer_norm_eps)
    writer.add_causal_attention(causal)
    writer.add_pooling_type(gguf.PoolingType(pooling))
    writer.add_token_type_count(c.type_vocab_size)
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_llama_cpp_token(t, i) for i, t in enumerate(VOCAB)])
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    writer.add_token_types([control if t in SPECIALS else normal for t in VOCAB])
    for add, token in [
        (writer.add_bos_token_id, "[CLS]"), (writer.add_eos_token_id, "[SEP]"),
        (writer.add_sep_token_id, "[SEP]"), (writer.add_unk_token_id, "[UNK]"),
        (writer.add_pad_token_id, "[PAD]"), (writer.add_mask_token_id, "[MASK]"),
    ]:  # fmt: skip
        add(VOCAB.index(token))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, c.num_hidden_layers)
    held = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue  # the converter drops them
        data = tensor.numpy()
        data = data.astype(np.float16) if data.ndim == 2 else data
        if hf_name == "embeddings.token_type_embeddings.weight":
            data = data.astype(np.float32)  # llama.cpp reads token types as F32
        writer.add_tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")), data)
        held[hf_name] = torch.from_numpy(data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def _reference_tokenizer(folder: Path) -> object:
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)


def test_bert_gguf_matches_transformers_bert_model_with_the_stored_weights(
    tmp_path: Path,
) -> None:
    model = _bert()
    held = _write_gguf(tmp_path / "bert.gguf", model)
    ours, tokenizer = tformer.load(tmp_path / "bert.gguf")
    assert ours.config.task_head == "embedding"
    model.load_state_dict(held, strict=False)
    ids = torch.randint(5, len(VOCAB), (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    assert_close(run_tformer(ours, ids, mask), run_hf(model, ids, mask), mask)
    # sentence embeddings: transformers' mean pooling over the mask, L2-normalised
    batch = _reference_tokenizer(tmp_path)(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    theirs = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    assert (embed(ours, tokenizer, TEXTS[:3]) - theirs).abs().max().item() <= 1e-5


def test_bert_gguf_tokenizer_encodes_as_transformers_bert_tokenizer(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "bert.gguf", _bert())
    _, tokenizer = tformer.load(tmp_path / "bert.gguf")
    reference = _reference_tokenizer(tmp_path)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == reference(text)["input_ids"], text
        assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
    assert [tokenizer.token_id(r) for r in ("cls", "sep", "pad", "mask", "unk")] == [2, 3, 0, 4, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"pooling": 2}, r"bert\.pooling_type=2 is not supported"),
     ({"causal": True}, "a causal 'bert' encoder is not supported")],
)  # fmt: skip
def test_bert_gguf_with_other_pooling_or_causal_attention_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    _write_gguf(tmp_path / "bert.gguf", _bert(), **change)
    with pytest.raises(CheckpointError, match=message):
        tformer.load(tmp_path / "bert.gguf")


def test_llama_cpp_reads_the_file_as_tformer_does(tmp_path: Path) -> None:
    """The file is what llama.cpp runs: its tokens and pooled embeddings are tformer's."""
    llama_cpp = pytest.importorskip("llama_cpp")
    _write_gguf(tmp_path / "bert.gguf", _bert())
    ours, tokenizer = tformer.load(tmp_path / "bert.gguf")
    theirs = llama_cpp.Llama(str(tmp_path / "bert.gguf"), embedding=True, verbose=False)
    for text in TEXTS:
        assert theirs.tokenize(text.encode(), add_bos=True, special=True) == tokenizer.encode(text)
    expected = embed(ours, tokenizer, TEXTS[:3])
    got = torch.tensor([theirs.embed(text, normalize=True) for text in TEXTS[:3]])
    assert (got - expected).abs().max().item() <= 1e-3  # llama.cpp multiplies in float16
