"""Positional encodings behind one interface.

Every encoding is a module with two methods; a model calls both and need not know which
scheme it has:

* `add(x, position_ids)` adds absolute position information to the embeddings
  (sinusoidal, learned) or returns `x` unchanged (rotary, none);
* `rotation(position_ids)` returns the (cos, sin) tables that attention applies to queries
  and keys (rotary) or None;
* `score_bias()` returns the function that turns key-minus-query distances into additive
  biases on the attention scores (relative, T5), which the mask function applies, or None.

`position_ids` are explicit (B, T) integers rather than implied by the sequence index so that
left-padded batches and KV-cached decoding put every token at its true position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# The tables derived from the config (not stored in checkpoints) are computed on the CPU even
# when a model is built on the meta device (`models.empty`), so they need no recomputing
# after loading; `.to(device)` moves them with the rest of the model.
TABLES = torch.device("cpu")


class PositionalEncoding(nn.Module):
    """Base class: no position information (subclasses override one method)."""

    def add(self, x: Tensor, position_ids: Tensor) -> Tensor:
        return x

    def rotation(self, position_ids: Tensor) -> tuple[Tensor, Tensor] | None:
        return None

    def score_bias(self) -> Callable[[Tensor], Tensor] | None:
        return None


def sinusoidal_table(max_seq_len: int, d_model: int, layout: str = "interleaved") -> Tensor:
    """The paper's encodings (section 3.5), (max_seq_len, d_model):

    PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    `layout` "halves" keeps the same values but puts every sin before every cos (the
    ceil(d_model/2) sines, then the cosines), as Marian and fairseq store them.
    """
    position = torch.arange(max_seq_len, dtype=torch.float64, device=TABLES).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64, device=TABLES)
        * (-math.log(10000.0) / d_model)
    )
    sin = torch.sin(position * inv_freq)  # (max_seq_len, ceil(d_model/2))
    cos = torch.cos(position * inv_freq[: d_model // 2])  # (max_seq_len, floor(d_model/2))
    if layout == "halves":
        return torch.cat((sin, cos), dim=1).float()
    table = torch.zeros(max_seq_len, d_model, dtype=torch.float64, device=TABLES)
    table[:, 0::2] = sin
    table[:, 1::2] = cos
    return table.float()


class SinusoidalPositions(PositionalEncoding):
    """Fixed sinusoids; not trained, so stored as a non-persistent buffer."""

    def __init__(self, max_seq_len: int, d_model: int, layout: str = "interleaved") -> None:
        super().__init__()
        table = sinusoidal_table(max_seq_len, d_model, layout)
        self.register_buffer("table", table, persistent=False)

    def add(self, x: Tensor, position_ids: Tensor) -> Tensor:
        return x + self.table[position_ids].to(x.dtype)


class LearnedPositions(PositionalEncoding):
    """One trained vector per position (BERT, GPT-2).

    `offset` rows come before position 0's: fairseq (RoBERTa) keeps pad_id + 1 of them, so
    its checkpoints load as they are, row pad_id serving the padding tokens (position -1).
    """

    def __init__(self, max_seq_len: int, d_model: int, offset: int = 0) -> None:
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.empty(max_seq_len + offset, d_model))

    def add(self, x: Tensor, position_ids: Tensor) -> Tensor:
        return x + nn.functional.embedding(position_ids + self.offset, self.weight)


def positions_skipping_padding(input_ids: Tensor, pad_id: int) -> Tensor:
    """(B, T) ids -> (B, T) positions that count only non-pad tokens (fairseq's
    `make_positions`): padding on either side leaves every token's position alone; padding
    tokens get -1."""
    real = input_ids.ne(pad_id).long()
    return torch.cumsum(real, dim=1) * real - 1


@dataclass(frozen=True)
class RopeScaling:
    """Stretch rotary's frequencies for a context longer than the one a model was trained on.

    "linear" (position interpolation) divides every frequency by `factor`. "llama3" (Llama
    3.1+) divides only the low frequencies -- wavelengths above original_max_seq_len /
    low_freq_factor, which never turned a full circle in pre-training -- keeps the high ones
    (wavelengths below original_max_seq_len / high_freq_factor, which resolve local order) and
    blends the band between, so short-range behaviour is unchanged.
    """

    kind: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 0

    def apply(self, inv_freq: Tensor) -> Tensor:
        """(head_dim/2,) frequencies -> the scaled ones, same shape."""
        if self.kind == "linear":
            return inv_freq / self.factor
        wavelength = 2 * math.pi / inv_freq
        stretched = torch.where(
            wavelength > self.original_max_seq_len / self.low_freq_factor,
            inv_freq / self.factor,
            inv_freq,
        )
        smooth = (self.original_max_seq_len / wavelength - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - smooth) * stretched / self.factor + smooth * stretched
        band = (wavelength >= self.original_max_seq_len / self.high_freq_factor) & (
            wavelength <= self.original_max_seq_len / self.low_freq_factor
        )
        return torch.where(band, blended, stretched)


class RotaryPositions(PositionalEncoding):
    """Rotary position embedding (Su et al., 2021), applied to queries and keys in attention.

    Dimension pairs are (i, i + rotary_dim/2) -- the "rotate half" layout of GPT-NeoX and
    Hugging Face Llama -- so converted Hugging Face checkpoints need no weight permutation.
    `rotary_dim` < head_dim rotates only each head's first features (partial rotary, GPT-NeoX
    and Phi), frequencies spaced over those alone; the tables then cover just them.
    """

    def __init__(
        self, rotary_dim: int, theta: float = 10000.0, scaling: RopeScaling | None = None
    ) -> None:
        super().__init__()
        steps = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=TABLES) / rotary_dim
        inv_freq = 1.0 / theta**steps
        if scaling is not None:
            inv_freq = scaling.apply(inv_freq)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotation(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) -> cos, sin of shape (B, 1, T, rotary_dim), broadcastable over heads."""
        angles = position_ids.unsqueeze(-1).float() * self.inv_freq  # (B, T, rotary_dim/2)
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, head_dim) queries or keys by their positions' angles: the first
    rotary_dim features (the tables' width), the rest as they are."""
    rotary_dim = cos.shape[-1]
    if rotary_dim < x.shape[-1]:
        turned, kept = x[..., :rotary_dim], x[..., rotary_dim:]
        return torch.cat((apply_rotary(turned, cos, sin), kept), dim=-1)
    half = rotary_dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


@dataclass(frozen=True)
class RelativeBuckets:
    """How T5 buckets key-minus-query distances (Raffel et al., 2020, section 2.1)."""

    n_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True  # encoders: both directions; causal self-attention: only back


def relative_position_bucket(distance: Tensor, buckets: RelativeBuckets) -> Tensor:
    """Bucket ids of key-minus-query distances (any shape, long), as Mesh TensorFlow's
    `_relative_position_bucket`: half the buckets (of each direction, if bidirectional) are
    exact distances 0, 1, ...; the others widen logarithmically up to `max_distance`, beyond
    which every distance shares the last bucket. A causal decoder sees only keys behind it
    (distance <= 0), so it spends every bucket on the one direction."""
    num_buckets, bucket = buckets.num_buckets, torch.zeros_like(distance)
    if buckets.bidirectional:
        num_buckets //= 2
        bucket = (distance > 0).long() * num_buckets  # keys after the query: upper half
        distance = distance.abs()
    else:
        distance = -distance.clamp(max=0)
    max_exact = num_buckets // 2
    # the float computation is Mesh TensorFlow's, so every distance lands in its bucket
    log_ratio = torch.log(distance.float() / max_exact) / math.log(buckets.max_distance / max_exact)
    wide = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < max_exact, distance, wide)


class RelativePositionBias(PositionalEncoding):
    """T5's positions: no vectors added, but a learned scalar per (bucket, head) added to the
    attention scores of every layer of the stack, one table for all of them."""

    def __init__(self, buckets: RelativeBuckets) -> None:
        super().__init__()
        self.buckets = buckets
        self.weight = nn.Parameter(torch.empty(buckets.num_buckets, buckets.n_heads))

    def score_bias(self) -> Callable[[Tensor], Tensor]:
        return self.bias

    def bias(self, distance: Tensor) -> Tensor:
        """(B or 1, T_query, T_key) key-minus-query distances -> (B or 1, H, T_query, T_key)."""
        ids = relative_position_bucket(distance, self.buckets)
        return nn.functional.embedding(ids, self.weight).permute(0, 3, 1, 2)


def make_positional(
    kind: str,
    *,
    max_seq_len: int,
    d_model: int,
    rotary_dim: int,
    theta: float,
    scaling: RopeScaling | None = None,
    offset: int = 0,
    layout: str = "interleaved",
    relative: RelativeBuckets | None = None,
) -> PositionalEncoding:
    """The encoding named by `ModelConfig.positional` (`offset`: learned rows before 0's,
    `layout`: where a sinusoidal table puts sin and cos, `relative`: the buckets of
    positional="relative")."""
    if kind == "sinusoidal":
        return SinusoidalPositions(max_seq_len, d_model, layout)
    if kind == "learned":
        return LearnedPositions(max_seq_len, d_model, offset)
    if kind == "rotary":
        return RotaryPositions(rotary_dim, theta, scaling)
    if kind == "relative":
        assert relative is not None, "positional='relative' needs its RelativeBuckets"
        return RelativePositionBias(relative)
    return PositionalEncoding()
