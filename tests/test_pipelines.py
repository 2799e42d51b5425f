"""The task pipelines on tiny local models: each agrees with an independent computation."""

from __future__ import annotations

import pytest
import torch

from tformer import ModelConfig, Tokenizer, build_model
from tformer.explainer.inputs import pooled_embeddings
from tformer.generation import generate
from tformer.pipelines import embed, translate

TEXT = "the quick brown fox jumps over the lazy dog\nhello world\n"
SENTENCES = ["the fox", "a dog jumps over the lazy brown fox", "hello"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text(TEXT)
    return Tokenizer.train_char([corpus])


def tiny(arch: str, tokenizer: Tokenizer, **fields: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        arch=arch, d_model=32, n_heads=4, n_layers=2, d_ff=48, max_seq_len=48, dropout=0.0,
        **tokenizer.config_ids(), **fields,
    )  # fmt: skip
    return build_model(config).eval()


def test_embeddings_are_the_unpadded_mean_of_each_sentence_normalised(tokenizer) -> None:
    """Batched (padded) pipeline, the embedding head and the explainer's neighbour sentences
    all equal a hand-computed mean over each sentence alone."""
    model = tiny("encoder", tokenizer, head="embedding")
    expected = []
    for sentence in SENTENCES:
        ids = torch.tensor([tokenizer.encode(sentence)])
        with torch.no_grad():
            hidden = model(ids).last_hidden_state[0]  # (T, d_model)
            head = model(ids).embeddings[0]
        mean = hidden.mean(dim=0)
        expected.append(mean / mean.norm())
        torch.testing.assert_close(head, expected[-1], atol=1e-6, rtol=1e-5)
    expected = torch.stack(expected)
    torch.testing.assert_close(embed(model, tokenizer, SENTENCES), expected, atol=1e-5, rtol=1e-5)
    explained = pooled_embeddings(model, tokenizer, SENTENCES, torch.device("cpu"))
    torch.testing.assert_close(explained, expected, atol=1e-5, rtol=1e-5)


def test_translate_returns_each_lines_own_decoding_in_input_order(tokenizer) -> None:
    model = tiny("encoder-decoder", tokenizer)
    lines = ["hello world", "", "the lazy dog jumps over", "fox"]
    outputs = translate(model, tokenizer, lines, batch_size=2, max_new_tokens=8)
    end = {model.config.eos_id, model.config.pad_id}
    for line, output in zip(lines, outputs, strict=True):
        if not line:
            assert output == ""
            continue
        row = generate(model, torch.tensor([tokenizer.encode(line)]), max_new_tokens=8)[0]
        kept = row.tolist()[: next((i for i, t in enumerate(row.tolist()) if t in end), len(row))]
        assert output == tokenizer.decode(kept)


def test_translate_refuses_a_decoder_only_model(tokenizer) -> None:
    with pytest.raises(ValueError, match="translation needs an encoder-decoder model"):
        translate(tiny("decoder", tokenizer), tokenizer, ["hello"])
