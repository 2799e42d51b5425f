"""Random-initialised `transformers` T5 models of the two layouts, for the parity tests.

Odd shapes: d_kv 12 with 4 heads (48 != d_model 32), 3 encoder and 2 decoder layers (not the
other way round: transformers sizes its generation cache by the encoder's count), 8
buckets up to distance 12, so sequences of a few tokens already reach the logarithmic buckets
and longer ones go past max_distance.
"""

from __future__ import annotations

import torch
import transformers

VERSIONS = ("1.0", "1.1")  # v1.0: ReLU, tied + rescaled output; v1.1 / Flan: gated GELU, untied


def _config(version: str, vocab_size: int, init_factor: float) -> transformers.T5Config:
    v1 = version == "1.0"
    return transformers.T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=12, num_heads=4, d_ff=40, num_layers=3,
        num_decoder_layers=2, relative_attention_num_buckets=8,
        relative_attention_max_distance=12, feed_forward_proj="relu" if v1 else "gated-gelu",
        tie_word_embeddings=v1, decoder_start_token_id=0, initializer_factor=init_factor,
        pad_token_id=0, eos_token_id=1,
    )  # fmt: skip


def hf_t5(
    version: str, vocab_size: int, init_factor: float = 1.0
) -> transformers.T5ForConditionalGeneration:
    """A T5ForConditionalGeneration of `version` ("1.0" or "1.1"); `init_factor` scales
    T5's init (at 1 these tiny models mostly repeat one token when decoding; at 2 their
    outputs vary, but logits grow and float32 round-off with them)."""
    model = transformers.T5ForConditionalGeneration(_config(version, vocab_size, init_factor))
    if version != "1.0":
        # transformers 5 ties T5's lm_head whatever the config says; a checkpoint with its own
        # lm_head.weight (Flan-T5's) unties it. T5's init gives that head unit-variance rows:
        # shrunk, the logits are O(1) and a 1e-5 comparison measures round-off, not magnitude.
        with torch.no_grad():
            model.lm_head.weight = torch.nn.Parameter(model.shared.weight * 0.05)
    return model


def hf_t5_encoder(version: str, vocab_size: int) -> transformers.T5EncoderModel:
    """The encoder of `hf_t5(version, vocab_size)` alone (sentence-T5's backbone)."""
    return transformers.T5EncoderModel(_config(version, vocab_size, 1.0))
