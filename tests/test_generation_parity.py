"""Greedy and beam search token-identical to `transformers` generate() on the same weights.

Random-initialised GPT-2, Llama (grouped-query attention; one with Llama 3's rope scaling,
decoding past its original context), Qwen2 (q/k/v biases), Qwen3 (q/k norm), BART, Marian and T5
(relative position biases in cached decoding) models are saved with
`save_pretrained` and opened with `tformer.load`; both libraries then decode the same batch.
Decoder prompts are left-padded, BART, Marian and T5 sources right-padded, so padding is covered
too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from t5_models import VERSIONS, hf_t5  # noqa: E402
from tformer.generation import generate, left_pad  # noqa: E402

VOCAB = 53
NEW_TOKENS = 10


def _gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=48,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=48,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _llama3() -> torch.nn.Module:
    """Pre-trained for 8 positions (prompt plus new tokens reach 17), head_dim 16 != 32 / 4."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, intermediate_size=48, max_position_embeddings=48,
        rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 4.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8},
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _qwen2() -> torch.nn.Module:
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=48, max_position_embeddings=48,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.Qwen2ForCausalLM(config)


def _qwen3() -> torch.nn.Module:
    config = transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=12, intermediate_size=48, max_position_embeddings=48,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    return transformers.Qwen3ForCausalLM(config)


def _bart() -> torch.nn.Module:
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_position_embeddings=48,
        forced_bos_token_id=None, forced_eos_token_id=None, no_repeat_ngram_size=0,
    )  # fmt: skip
    return transformers.BartForConditionalGeneration(config)


def _marian() -> torch.nn.Module:
    """opus-mt's layout (eos 0, pad = decoder start = the last id), an odd width."""
    config = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=27, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=3, decoder_attention_heads=3, encoder_ffn_dim=40,
        decoder_ffn_dim=40, max_position_embeddings=48, activation_function="swish",
        scale_embedding=True, pad_token_id=VOCAB - 1, eos_token_id=0,
        decoder_start_token_id=VOCAB - 1, forced_eos_token_id=None,
    )  # fmt: skip
    return transformers.MarianMTModel(config)  # (its logits bias: test_family_marian.py)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2": _gpt2,
    "llama-gqa": _llama,
    "llama3-rope": _llama3,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "bart": _bart,
    "marian": _marian,
    # twice T5's init: decoding varies from token to token, rows end at a frequent token
    **{f"t5-v{v}": lambda v=v: hf_t5(v, VOCAB, init_factor=2.0) for v in VERSIONS},
}
ROWS = [[5, 9, 3, 17, 8, 30, 11], [12, 4, 40], [25, 7, 7, 19, 33]]


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[torch.nn.Module, tformer.TformerModel]:
    torch.manual_seed(0)
    hf = MODELS[request.param]()
    with torch.no_grad():  # larger weights than the init: peaked, tie-free distributions
        for p in hf.parameters():
            if p.requires_grad:  # not Marian's fixed sinusoid tables
                p.add_(torch.randn_like(p) * 0.3)
    hf.eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours, _ = tformer.load(path)
    return hf, ours.eval()


def _batch(ours: tformer.TformerModel) -> tuple[torch.Tensor, torch.Tensor]:
    if ours.config.arch == "decoder":
        return left_pad(ROWS, pad_id=0)
    from tformer.data.collate import pad, padding_mask

    return pad(ROWS, ours.config.pad_id), padding_mask(ROWS)  # BART pads on the right


def _hf_generate(hf, ids, mask, eos: int, **options) -> torch.Tensor:
    options = {"length_penalty": 1.0, "early_stopping": False} | options
    out = hf.generate(
        ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos,
        pad_token_id=hf.config.pad_token_id, **options,
    )  # fmt: skip
    return out[:, 1:] if hf.config.is_encoder_decoder else out[:, ids.shape[1] :]


def _through_eos(rows: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row up to and including its first EOS. What follows differs only in filler:
    transformers fills finished beams with EOS when pad_token_id is 0 (`0 or eos`)."""
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(eos) + 1] if eos in row else row)
    return out


def _frequent_token(ours, ids, mask) -> int:
    """A token the model produces early on: as EOS it makes rows (and beams) end mid-way."""
    free = generate(ours, ids, mask, max_new_tokens=4, eos_token_id=[])
    return int(free[0, 2])


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("eos", ["config", "frequent"])
def test_decoding_token_identical_to_transformers(pair, num_beams: int, eos: str) -> None:
    hf, ours = pair
    ids, mask = _batch(ours)
    eos_id = ours.config.eos_id if eos == "config" else _frequent_token(ours, ids, mask)
    theirs = _hf_generate(hf, ids, mask, eos_id, num_beams=num_beams)
    mine = generate(
        ours, ids, mask, max_new_tokens=NEW_TOKENS, num_beams=num_beams, eos_token_id=eos_id
    )
    assert _through_eos(mine, eos_id) == _through_eos(theirs, eos_id)
    if eos == "frequent":
        assert (mine == eos_id).any(), "the test should exercise rows that end early"


@pytest.mark.parametrize(
    ("early_stopping", "length_penalty"), [(False, 1.0), (True, 1.0), ("never", 2.0), (False, 0.5)]
)
def test_n_best_lists_match_transformers(pair, early_stopping, length_penalty) -> None:
    hf, ours = pair
    ids, mask = _batch(ours)
    eos_id = _frequent_token(ours, ids, mask)
    options = dict(
        num_beams=4, num_return_sequences=3, early_stopping=early_stopping,
        length_penalty=length_penalty,
    )  # fmt: skip
    theirs = _hf_generate(hf, ids, mask, eos_id, **options)
    mine = generate(ours, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=eos_id, **options)
    assert _through_eos(mine, eos_id) == _through_eos(theirs, eos_id)


def test_parity_models_are_not_degenerate(pair) -> None:
    """Outputs differ between prompts, so agreement above is not agreement on a constant."""
    _, ours = pair
    ids, mask = _batch(ours)
    out = generate(ours, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert len({tuple(row) for row in out.tolist()}) == len(ROWS)
