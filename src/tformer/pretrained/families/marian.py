"""Marian (the `opus-mt-*` translators): the 2017 Transformer as Marian-NMT trains it.

BART's layers and config.json keys (families/bart.py) with the paper's fixed sinusoidal
positions -- stored as all sines, then all cosines ("halves") rather than interleaved -- no
embedding LayerNorm, embeddings scaled by sqrt(d_model) where `scale_embedding` says so (the
opus-mt models do), a logits bias, and the pad token as the decoder's first input.
"""

from __future__ import annotations

from tformer.pretrained.families.bart import (
    BART_DEFAULTS,
    BART_KEYS,
    BART_SAME,
    BART_TENSORS,
    POST_NORM_SEQ2SEQ,
)
from tformer.pretrained.families.record import Family

MARIAN = Family(
    model_types=("marian",),
    architectures={"MarianMTModel": "lm", "MarianModel": "lm"},
    bare_architectures=("MarianModel",),
    base_prefix="model.",
    fixed={
        **POST_NORM_SEQ2SEQ,
        "positional": "sinusoidal",
        "sinusoidal_layout": "halves",
        "embedding_norm": False,
        "tie_embeddings": True,
    },
    config_keys=tuple(key for key in BART_KEYS if key[0] != "tie_embeddings"),
    hf_defaults={
        **BART_DEFAULTS,  # MarianConfig's own below: pad = decoder start = opus-mt's last id
        "pad_token_id": 58100,
        "bos_token_id": None,
        "eos_token_id": 0,
        "decoder_start_token_id": 58100,
        "decoder_vocab_size": lambda hf: hf["vocab_size"],
    },
    activations={
        "swish": "silu",  # opus-mt's (SiLU); the first name for silu, so export writes it
        "silu": "silu",
        "gelu": "gelu",
        "relu": "relu",
        "gelu_new": "gelu_tanh",
    },
    tensors=BART_TENSORS,
    # the sinusoid tables (older files store them; they are the fixed ones tformer computes)
    ignored=(r"(encoder|decoder)\.embed_tokens\.weight$", r"embed_positions\.weight$"),
    # separate source and target embeddings (and vocabularies) are not implemented; nor is
    # tie_word_embeddings=False, with which transformers >= 5 unties the encoder's and the
    # decoder's embeddings from each other too (three matrices, `shared` unused)
    must_be={"share_encoder_decoder_embeddings": True, "tie_word_embeddings": True},
    same=(*BART_SAME, ("vocab_size", "decoder_vocab_size")),
)
