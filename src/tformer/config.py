"""ModelConfig: one frozen, validated description of every architecture tformer builds.

BERT, GPT-2, Llama, Qwen and the 2017 Transformer differ only in the values below (norm
placement, activation, positional scheme, head counts, tying), so one dataclass describes them
all and every invalid combination is rejected here, before any tensor is allocated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tformer.errors import ConfigError, MissingFileError
from tformer.field_types import check_field_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

ARCHS = ("decoder", "encoder", "encoder-decoder")
# "relative": no position vectors; a learned bias per head on every attention score, by the
# bucketed key-minus-query distance (T5)
POSITIONALS = ("sinusoidal", "learned", "rotary", "relative", "none")
# where a sinusoidal table puts sin and cos: alternating (the paper's PE(pos, 2i), PE(pos, 2i+1))
# or sin in the first half, cos in the second (Marian, fairseq, tensor2tensor)
SINUSOIDAL_LAYOUTS = ("interleaved", "halves")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("post", "pre")
# gated: "swiglu" (Llama), "geglu" (exact GELU), "geglu_tanh" (tanh GELU: Gemma, T5 v1.1)
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu", "geglu_tanh")
GATED_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh")
POOLINGS = ("cls", "mean")
LAYER_TYPES = ("full", "sliding")  # a block's attention: every position, or a window
# BERT/RoBERTa pool with tanh, DistilBERT with ReLU, ModernBERT with GELU
POOLER_ACTIVATIONS = ("tanh", "relu", "gelu")
# rope_* fields each scaling reads (llama3 reads them all); the others must keep their defaults,
# or they would be silently ignored
ROPE_SCALING_FIELDS = {
    "linear": ("rope_factor",),
    "llama3": (
        "rope_factor",
        "rope_low_freq_factor",
        "rope_high_freq_factor",
        "rope_original_max_seq_len",
    ),
}
ROPE_SCALINGS = tuple(ROPE_SCALING_FIELDS)
HEADS_BY_ARCH = {
    "decoder": ("lm",),
    "encoder": (
        "masked-lm",
        "sequence-classification",
        "token-classification",
        "question-answering",
        "embedding",
    ),
    "encoder-decoder": ("lm",),
}
DEFAULT_HEAD = {"decoder": "lm", "encoder": "masked-lm", "encoder-decoder": "lm"}


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


def _positive(name: str, value: int | float) -> None:
    if not value > 0:
        raise ConfigError(f"{name}={value!r} must be positive")


def _nearest_divisor(n: int, target: int) -> int:
    """The divisor of `n` closest to `target` (the smaller one on a tie); O(sqrt(n))."""
    divisors = {d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}
    return min(sorted(divisors), key=lambda d: abs(d - target))


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Transformer; `arch` selects the family.

    Defaults are the 2017 paper's base model (Vaswani et al., Table 3, row "base") except
    `arch`, which defaults to a decoder-only LM.
    """

    arch: str = "decoder"
    vocab_size: int = 32000
    d_model: int = 512
    n_heads: int = 8
    n_kv_heads: int | None = None  # < n_heads: grouped-query attention; None: = n_heads
    head_dim: int | None = None  # None: d_model // n_heads
    n_layers: int = 6  # decoder-only / encoder-only depth; default for the two below
    n_encoder_layers: int | None = None
    n_decoder_layers: int | None = None
    d_ff: int = 2048
    max_seq_len: int = 512
    positional: str = "sinusoidal"
    sinusoidal_layout: str = "interleaved"  # see SINUSOIDAL_LAYOUTS; only for "sinusoidal"
    # Rows of the learned position table before position 0's (fairseq/RoBERTa: pad_id + 1,
    # row pad_id being the padding tokens'); the table has max_seq_len + position_offset rows.
    position_offset: int = 0
    # Default position ids count only tokens that are not pad_id (RoBERTa derives them from
    # the input ids), so padding never shifts a token's position; padding tokens sit at
    # position -1, table row position_offset - 1.
    positions_skip_padding: bool = False
    rope_theta: float = 10000.0
    # Rotary for a longer context than pre-training: "linear" divides every frequency by
    # rope_factor; "llama3" (Llama 3.1+) divides only wavelengths longer than
    # rope_original_max_seq_len / rope_low_freq_factor, keeps those shorter than
    # rope_original_max_seq_len / rope_high_freq_factor and blends the band between.
    rope_scaling: str | None = None
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int | None = None
    # rotary turns only the first int(head_dim * rotary_fraction) features of each head, with
    # frequencies spaced over those alone; the rest pass unrotated (GPT-NeoX's rotary_pct,
    # Phi's partial_rotary_factor)
    rotary_fraction: float = 1.0
    # positional="relative" (T5): each direction of bidirectional attention has half the
    # buckets (causal attention, one direction, all); half of those are the exact distances
    # 0, 1, ..., the rest widen logarithmically up to relative_max_distance, past which all
    # distances share the last
    relative_buckets: int = 32
    relative_max_distance: int = 128
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    # RMSNorm scales by (norm_weight_offset + weight): Gemma stores w and scales by (1 + w),
    # so its weights start at zero; 0.0 is everyone else's plain `weight`
    norm_weight_offset: float = 0.0
    norm_position: str = "post"  # "post": the 2017 paper / BERT; "pre": GPT-2 / Llama
    # attention and feed-forward both read the block's input, x + attn(norm1(x)) +
    # ffn(norm2(x)), instead of the feed-forward reading x + attn(...) (GPT-NeoX, Pythia);
    # pre-norm decoders and encoders only
    parallel_residual: bool = False
    final_norm: bool | None = None  # norm after the last block; None: True for pre-norm
    embedding_norm: bool = False  # norm right after embeddings (BERT, BART)
    norm_bias: bool = True  # LayerNorms with a bias (ModernBERT's have none; RMSNorm never has)
    # the first block normalises its attention input; False: it reads the embedding norm's
    # output as it is (ModernBERT: pre-norm after an embedding norm, layer 0 without attn_norm)
    first_block_attn_norm: bool = True
    # pre-norm blocks also normalise each sub-layer's output before the residual add,
    # x + Norm(Sublayer(Norm(x))) (Gemma 2/3's post-attention and post-feed-forward norms)
    sandwich_norm: bool = False
    activation: str = "relu"
    dropout: float = 0.1
    attention_dropout: float | None = None  # None: = dropout
    bias: bool = True  # biases in attention and feed-forward projections
    attention_bias: bool | None = None  # biases in all four attention projections; None: = bias
    qkv_bias: bool | None = None  # biases in q/k/v alone (Qwen2); None: = attention_bias
    qk_norm: bool = False  # a `norm` over each head's queries and keys before rotary (Qwen3)
    # factor on q.k before the softmax; None: 1 / sqrt(head_dim) (the paper's). T5 uses 1.0
    # (its init absorbs the scale), Gemma query_pre_attn_scalar ** -0.5.
    attention_scale: float | None = None
    # soft-capping: tanh(s / cap) * cap bounds the attention scores (after the scale, before
    # the mask) and the LM head's logits to (-cap, cap) (Gemma 2); None: uncapped
    attention_softcap: float | None = None
    logit_softcap: float | None = None
    # local attention: causal self-attention sees only the last `sliding_window` positions,
    # its own included (Mistral, Gemma); an encoder's, sliding_window // 2 on either side
    # (ModernBERT). None: no window.
    sliding_window: int | None = None
    # per block, "full" or "sliding" (the window applies to "sliding" blocks only: Gemma's and
    # ModernBERT's alternating local/global attention); None: every block "sliding" when
    # sliding_window is set, else "full"
    layer_types: tuple[str, ...] | None = None
    # rotary base of the "sliding" blocks (Gemma 3's rope_local_base_freq, ModernBERT's
    # local_rope_theta), never rescaled by rope_scaling; None: rope_theta, as the others
    rope_local_theta: float | None = None
    tie_embeddings: bool = True  # output projection shares the token-embedding matrix
    lm_head_bias: bool = False  # a bias on the LM output projection (BART's final_logits_bias)
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (paper 3.4)
    # multiply the final hidden states by d_model ** -0.5 before the LM output projection:
    # T5 v1.0 does, as Mesh TensorFlow does for an output matrix tied to the embeddings
    scale_output: bool = False
    type_vocab_size: int = 0  # BERT segment embeddings; 0 disables them
    head: str | None = None  # task head; None: the arch's default (see HEADS_BY_ARCH)
    n_labels: int = 2  # classes for classification heads
    labels: tuple[str, ...] | None = None  # class names of classification heads, by id
    pooling: str = "cls"  # how sequence-classification reduces tokens
    pooler: bool = False  # BERT's dense+tanh pooler before sequence classification
    pooler_activation: str = "tanh"  # after the pooler's dense layer (DistilBERT: "relu")
    pooler_norm: bool = False  # a `norm` after the pooler's activation (ModernBERT's head)
    # biases on the heads' dense layers (the MLM head's transform, the pooler); None: = bias
    head_bias: bool | None = None
    init_std: float = 0.02
    pad_id: int | None = 0
    bos_id: int | None = None
    eos_id: int | None = None
    mask_id: int | None = None
    decoder_start_id: int | None = None  # first decoder input of seq2seq; None: bos_id

    def __post_init__(self) -> None:
        check_field_types(self)
        _choice("arch", self.arch, ARCHS)
        _choice("positional", self.positional, POSITIONALS)
        _choice("sinusoidal_layout", self.sinusoidal_layout, SINUSOIDAL_LAYOUTS)
        if self.sinusoidal_layout != "interleaved" and self.positional != "sinusoidal":
            raise ConfigError(
                f"sinusoidal_layout={self.sinusoidal_layout!r} needs positional='sinusoidal', "
                f"got positional={self.positional!r}"
            )
        _choice("norm", self.norm, NORMS)
        _choice("norm_position", self.norm_position, NORM_POSITIONS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("pooler_activation", self.pooler_activation, POOLER_ACTIVATIONS)
        if self.head is not None:
            _choice(f"head (for arch={self.arch!r})", self.head, HEADS_BY_ARCH[self.arch])
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_seq_len"):
            _positive(name, getattr(self, name))
        for name in (
            "n_kv_heads", "head_dim", "n_encoder_layers", "n_decoder_layers", "sliding_window"
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        _positive("norm_eps", self.norm_eps)
        _positive("rope_theta", self.rope_theta)
        if self.attention_scale is not None:
            _positive("attention_scale", self.attention_scale)
        _positive("n_labels", self.n_labels)
        if self.labels is not None and len(self.labels) != self.n_labels:
            raise ConfigError(
                f"labels has {len(self.labels)} names but n_labels={self.n_labels}; "
                "give one name per class"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}={value!r} must be in [0, 1)")
        if self.head_dim is None and self.d_model % self.n_heads:
            nearest = _nearest_divisor(self.d_model, self.n_heads)
            raise ConfigError(
                f"n_heads={self.n_heads} must divide d_model={self.d_model}; "
                f"try n_heads={nearest} (or set head_dim explicitly)"
            )
        if self.n_heads % self.kv_heads:
            raise ConfigError(
                f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads} "
                "(each key/value head serves a whole group of query heads)"
            )
        if self.positional == "rotary" and self.attention_head_dim % 2:
            raise ConfigError(
                f"positional='rotary' needs an even head size, got head_dim="
                f"{self.attention_head_dim} (d_model={self.d_model} / n_heads={self.n_heads})"
            )
        self._check_rotary_fraction()
        if not self.first_block_attn_norm and not (
            self.norm_position == "pre" and self.embedding_norm
        ):
            raise ConfigError(
                "first_block_attn_norm=False needs norm_position='pre' and embedding_norm=True "
                "(the embedding norm is then the first block's attention norm)"
            )
        self._check_rope_scaling()
        self._check_relative_buckets()
        self._check_position_offset()
        self._check_local_attention()
        if self.parallel_residual and (
            self.norm_position != "pre" or self.arch == "encoder-decoder"
        ):
            raise ConfigError(
                "parallel_residual=True needs norm_position='pre' and no cross-attention, got "
                f"norm_position={self.norm_position!r}, arch={self.arch!r}"
            )
        self._check_gemma_mechanisms()
        if self.scale_output and self.task_head != "lm":
            raise ConfigError(
                f"scale_output=True rescales the input of an LM output projection; head="
                f"{self.task_head!r} has none (leave scale_output out)"
            )
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size={self.type_vocab_size} must be >= 0")
        for name in ("pad_id", "bos_id", "eos_id", "mask_id", "decoder_start_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name}={value} must be a token id in [0, {self.vocab_size})")

    def _check_local_attention(self) -> None:
        if self.arch == "encoder-decoder" and (
            self.sliding_window is not None or self.layer_types is not None
        ):
            raise ConfigError(
                "sliding_window and layer_types are for arch='decoder' or 'encoder' (one stack); "
                "no encoder-decoder family has local attention"
            )
        if self.layer_types is not None:
            if len(self.layer_types) != self.n_layers:
                raise ConfigError(
                    f"layer_types names {len(self.layer_types)} blocks but n_layers="
                    f"{self.n_layers}; give one type per block"
                )
            for kind in self.layer_types:
                _choice("layer_types entry", kind, LAYER_TYPES)
            if "sliding" in self.layer_types and self.sliding_window is None:
                raise ConfigError("layer_types has 'sliding' blocks: set sliding_window")
        if self.rope_local_theta is not None:
            _positive("rope_local_theta", self.rope_local_theta)
            if self.positional != "rotary" or "sliding" not in self.block_types(self.n_layers):
                raise ConfigError(
                    "rope_local_theta is the rotary base of 'sliding' blocks: it needs "
                    "positional='rotary' and sliding blocks (sliding_window, layer_types)"
                )

    def _check_gemma_mechanisms(self) -> None:
        for name in ("attention_softcap", "logit_softcap"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise ConfigError(f"{name}={value!r} must be a positive number (None: no cap)")
        if not math.isfinite(self.norm_weight_offset):
            raise ConfigError(f"norm_weight_offset={self.norm_weight_offset!r} must be finite")
        if self.logit_softcap is not None and self.task_head != "lm":
            raise ConfigError(
                f"logit_softcap caps the logits of the 'lm' head; head={self.task_head!r} "
                "has none to cap"
            )
        if self.norm_weight_offset != 0.0 and self.norm != "rmsnorm":
            raise ConfigError(
                f"norm_weight_offset={self.norm_weight_offset!r} needs norm='rmsnorm', "
                f"got norm={self.norm!r}"
            )
        if self.sandwich_norm and self.norm_position != "pre":
            raise ConfigError(
                "sandwich_norm=True adds a norm on each sub-layer's output of pre-norm blocks; "
                f"it needs norm_position='pre', got {self.norm_position!r}"
            )
        if self.sandwich_norm and self.parallel_residual:
            raise ConfigError(
                "sandwich_norm=True and parallel_residual=True: no family has both, and the "
                "parallel block has no per-sub-layer residual for the second norm"
            )

    def block_types(self, n_blocks: int) -> tuple[str, ...]:
        """The attention of each of a stack's `n_blocks` blocks, "full" or "sliding"."""
        if self.layer_types is not None:
            return self.layer_types  # one stack of n_layers blocks (checked above)
        return ("full" if self.sliding_window is None else "sliding",) * n_blocks

    def _check_position_offset(self) -> None:
        if self.position_offset < 0:
            raise ConfigError(f"position_offset={self.position_offset} must be >= 0")
        if self.position_offset and self.positional != "learned":
            raise ConfigError(
                f"position_offset={self.position_offset} needs positional='learned' (it skips "
                f"rows of the learned table), got positional={self.positional!r}"
            )
        if not self.positions_skip_padding:
            return
        if self.arch != "encoder":
            raise ConfigError(
                f"positions_skip_padding=True needs arch='encoder', got arch={self.arch!r} "
                "(cached decoding keeps no count of each row's padding)"
            )
        if self.pad_id is None or self.position_offset < 1:
            raise ConfigError(
                "positions_skip_padding=True needs a pad_id and position_offset >= 1 (padding "
                f"tokens use table row position_offset - 1); got pad_id={self.pad_id}, "
                f"position_offset={self.position_offset}"
            )

    def _check_rotary_fraction(self) -> None:
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError(f"rotary_fraction={self.rotary_fraction!r} must be in (0, 1]")
        if self.rotary_fraction == 1.0:
            return
        if self.positional != "rotary":
            raise ConfigError(
                f"rotary_fraction={self.rotary_fraction!r} needs positional='rotary', "
                f"got positional={self.positional!r}"
            )
        if self.rotary_dim < 2 or self.rotary_dim % 2:
            raise ConfigError(
                f"rotary_fraction={self.rotary_fraction!r} rotates int(head_dim * "
                f"rotary_fraction)={self.rotary_dim} of head_dim={self.attention_head_dim} "
                "features per head; rotary needs an even number of them, at least 2"
            )

    def _check_relative_buckets(self) -> None:
        if self.positional != "relative":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name in ("relative_buckets", "relative_max_distance"):
                if getattr(self, name) != defaults[name]:
                    raise ConfigError(
                        f"{name}={getattr(self, name)} has no effect with positional="
                        f"{self.positional!r}; leave it out or use positional='relative'"
                    )
            return
        # bidirectional attention halves the buckets (one half per direction), and each half
        # keeps its first half for exact distances: at least one exact bucket, and a
        # max_distance past the exact ones, or the logarithmic buckets divide by zero
        if self.relative_buckets < 4:
            raise ConfigError(f"relative_buckets={self.relative_buckets} must be >= 4")
        if self.relative_max_distance <= self.relative_buckets // 2:
            raise ConfigError(
                f"relative_max_distance={self.relative_max_distance} must exceed "
                f"relative_buckets // 2 = {self.relative_buckets // 2} (the exact distances)"
            )

    def _check_rope_scaling(self) -> None:
        if self.rope_scaling is not None:
            _choice("rope_scaling", self.rope_scaling, ROPE_SCALINGS)
            if self.positional != "rotary":
                raise ConfigError(
                    f"rope_scaling={self.rope_scaling!r} needs positional='rotary', "
                    f"got positional={self.positional!r}"
                )
        used = ROPE_SCALING_FIELDS.get(self.rope_scaling or "", ())
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in ROPE_SCALING_FIELDS["llama3"]:
            if name not in used and getattr(self, name) != defaults[name]:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} has no effect with "
                    f"rope_scaling={self.rope_scaling!r}; leave it out or choose a scaling that "
                    "uses it"
                )
        for name in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
            _positive(name, getattr(self, name))
        if self.rope_scaling == "llama3":
            if self.rope_original_max_seq_len is None:
                raise ConfigError("rope_scaling='llama3' needs rope_original_max_seq_len")
            _positive("rope_original_max_seq_len", self.rope_original_max_seq_len)
            if not self.rope_low_freq_factor < self.rope_high_freq_factor:
                raise ConfigError(
                    f"rope_low_freq_factor={self.rope_low_freq_factor!r} must be below "
                    f"rope_high_freq_factor={self.rope_high_freq_factor!r}"
                )

    # ---- derived values -------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def attention_head_dim(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def rotary_dim(self) -> int:
        """Features of each head that rotary turns (the first ones)."""
        return int(self.attention_head_dim * self.rotary_fraction)

    @property
    def use_attention_bias(self) -> bool:
        return self.bias if self.attention_bias is None else self.attention_bias

    @property
    def use_head_bias(self) -> bool:
        return self.bias if self.head_bias is None else self.head_bias

    @property
    def use_qkv_bias(self) -> bool:
        return self.use_attention_bias if self.qkv_bias is None else self.qkv_bias

    @property
    def task_head(self) -> str:
        return DEFAULT_HEAD[self.arch] if self.head is None else self.head

    @property
    def encoder_layers(self) -> int:
        return self.n_layers if self.n_encoder_layers is None else self.n_encoder_layers

    @property
    def decoder_layers(self) -> int:
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

    @property
    def use_final_norm(self) -> bool:
        return self.norm_position == "pre" if self.final_norm is None else self.final_norm

    @property
    def attention_logit_scale(self) -> float:
        """The factor on q.k before the softmax."""
        if self.attention_scale is None:
            return self.attention_head_dim**-0.5
        return self.attention_scale

    @property
    def local_rope_theta(self) -> float:
        """The rotary base of the "sliding" blocks."""
        return self.rope_theta if self.rope_local_theta is None else self.rope_local_theta

    @property
    def attn_dropout(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def start_id(self) -> int | None:
        return self.bos_id if self.decoder_start_id is None else self.decoder_start_id

    # ---- (de)serialisation ----------------------------------------------------------
    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"a model config is a table of fields, not {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown ModelConfig field(s) {', '.join(unknown)}; known fields: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)

    def save(self, path: str | Path) -> None:
        """Write as JSON (`.json`) or TOML (`.toml`), chosen by the file's suffix."""
        path = Path(path)
        if path.suffix == ".toml":
            path.write_text(tables_to_toml({"model": self.to_dict()}))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a JSON file, or a TOML file whose `[model]` table (or top level) holds fields."""
        path = Path(path)
        if path.suffix == ".toml":
            data = read_toml(path)
            data = data.get("model", data)
        else:
            data = read_json(path)
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset from `src/tformer/presets/` (e.g. "transformer-base", "gpt-mini", "tiny-decoder")."""
        available = preset_names()
        if name not in available:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(available)}")
        with resources.as_file(_presets_dir() / f"{name}.toml") as file:
            config = cls.load(file)
        return config.replace(**overrides) if overrides else config


def _presets_dir() -> Any:
    return resources.files("tformer.presets")


def preset_names() -> list[str]:
    """Names of the model presets shipped in `src/tformer/presets/`."""
    return sorted(
        p.name[: -len(".toml")] for p in _presets_dir().iterdir() if p.name.endswith(".toml")
    )


def read_json(path: str | Path) -> Any:
    """The JSON value in `path`. A missing file is a MissingFileError, a malformed one a
    ConfigError naming the file (json's own message gives only a line and a column)."""
    try:
        return json.loads(_read_config_text(path))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON ({error})") from error


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables in the TOML file `path`, with the same errors as `read_json`."""
    try:
        return tomllib.loads(_read_config_text(path))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from error


def _read_config_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no config file at {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error.reason})") from error


def tables_to_toml(tables: dict[str, dict[str, Any]]) -> str:
    """TOML for one level of tables holding scalars (None values are omitted: TOML has no null)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            if value is None:
                continue
            # JSON scalars (strings, numbers) are valid TOML scalars; booleans are lower-case.
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
