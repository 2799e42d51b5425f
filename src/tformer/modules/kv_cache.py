"""KV caches: the keys and values a decoder has already computed.

Decoding step t attends over every earlier position; keeping their keys and values means a
step projects only its own new positions. One `KVCache` serves all layers of a decoder stack:
per layer a `LayerKVCache` with the self-attention keys/values, and the cross-attention
keys/values of the encoder output (projected once, on the first step).

Each batch row has its own length (`KVCache.lengths`): rows may hold different numbers of
positions -- a batch whose prompts were cropped to their real lengths, rows that joined a
running batch later (`extend`), a row cut back after rejected speculative tokens (`crop`), a
finished row leaving the batch (`select`). A row's next
position id is its length (`next_positions`), and `query_offsets` tells the mask where each
row's new queries sit.

Two layouts of the same cache:
* growing (the default): buffers that double in length when full, so a step copies only its
  own keys and values (concatenating would copy the whole cache at every step, O(T^2) over a
  generation). Attention sees the slots up to the longest row.
* fixed capacity (`fix_capacity`): attention sees every one of `capacity` slots at every step,
  so a compiled decode step has a single shape for a whole generation; slots a row has not
  written are masked out by the lengths.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tformer.errors import InputError


class LayerKVCache:
    """One attention layer's self-attention keys and values, (B, H_kv, slots, head_dim).

    Slot s of row b holds a position iff s < the owning cache's lengths[b]. The lengths are
    the owner's, shared by all layers, and advance once per forward pass (`KVCache.advance`).
    """

    def __init__(self, owner: KVCache) -> None:
        self._owner = owner
        self.key: Tensor | None = None  # (B, H_kv, capacity, head_dim)
        self.value: Tensor | None = None

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new positions (B, H_kv, T, hd) after each row's held ones; return the
        key and value slots attention sees, (B, H_kv, slots, hd)."""
        owner = self._owner
        if self.key is None or self.value is None:
            if owner.capacity is None:  # the first pass: keep its tensors as they are
                self.key, self.value = key, value
                return key, value
            raise InputError("fill the cache (e.g. with the prompt) before fixing its capacity")
        end = None  # a fixed capacity reads no host-side length: a compiled step's one graph
        if owner.capacity is None:
            end = owner.longest + key.shape[2]
            if end > self.key.shape[2]:
                self._grow(max(end, 2 * self.key.shape[2]))
        slots = None if owner.uniform and end is not None else owner.next_positions(key.shape[2])
        self.key = _write(self.key, key, owner.longest, slots)
        self.value = _write(self.value, value, owner.longest, slots)
        if end is None:
            return self.key, self.value
        return self.key[:, :, :end], self.value[:, :, :end]

    def _grow(self, capacity: int) -> None:
        """Move the held slots into buffers of `capacity` slots."""
        assert self.key is not None and self.value is not None
        self.key = _resized(self.key, capacity, self._owner.longest)
        self.value = _resized(self.value, capacity, self._owner.longest)

    def select(self, index: Tensor) -> None:
        """Keep batch rows `index`; a fixed-capacity cache keeps its buffers (in place)."""
        if self.key is None or self.value is None:
            return
        if self._owner.capacity is None:
            self.key, self.value = self.key[index], self.value[index]
        else:
            self.key.copy_(self.key[index])
            self.value.copy_(self.value[index])


def _write(buffer: Tensor, new: Tensor, start: int, slots: Tensor | None) -> Tensor:
    """`buffer` (B, H, S, hd) with `new` (B, H, T, hd) written at each row's length.

    Rows of one length in a growing cache take the slice at `start` (`slots` None);
    otherwise `slots` (B, T) index each row's positions from its own length (also how a
    fixed-capacity cache writes, with no host-side position, so a compiled step sees one
    graph). While gradients are recorded the result is a new tensor, as writing in place
    would change tensors autograd saved.
    """
    grad = new.requires_grad or buffer.requires_grad
    if slots is None:
        end = start + new.shape[2]
        if grad:
            return torch.cat((buffer[:, :, :start], new, buffer[:, :, end:]), dim=2)
        buffer[:, :, start:end] = new
        return buffer
    index = slots[:, None, :, None].expand_as(new)  # (B, H, T, hd)
    if grad:
        return buffer.scatter(2, index, new)
    return buffer.scatter_(2, index, new)


def _resized(buffer: Tensor, capacity: int, held: int) -> Tensor:
    """A zero buffer of `capacity` slots holding the first `held` slots of `buffer`."""
    batch, heads, _, head_dim = buffer.shape
    resized = buffer.new_zeros((batch, heads, capacity, head_dim))
    resized[:, :, :held] = buffer[:, :, :held]
    return resized


def _padded(buffer: Tensor, slots: int) -> Tensor:
    """`buffer` (B, H, S, hd) with zero slots appended up to `slots` (itself if S == slots)."""
    missing = slots - buffer.shape[2]
    return torch.nn.functional.pad(buffer, (0, 0, 0, missing)) if missing else buffer


class CrossAttentionCache:
    """One layer's cross-attention keys and values of the encoder output, (B, H_kv, S, hd):
    projected on the first decoding step and reused by every later one."""

    def __init__(self) -> None:
        self.key: Tensor | None = None
        self.value: Tensor | None = None

    def select(self, index: Tensor) -> None:
        """Keep batch rows `index`."""
        if self.key is not None and self.value is not None:
            self.key, self.value = self.key[index], self.value[index]


class KVCache:
    """The keys and values of every layer of one decoder stack, and each row's length.

    `lengths` (B,) counts the positions each row holds (None before the first pass); it is
    kept on the device, and `longest`/`uniform` mirror it on the host so that shapes never
    need a device sync.
    """

    def __init__(self, n_layers: int) -> None:
        self.self_attn = [LayerKVCache(self) for _ in range(n_layers)]
        self.cross_attn = [CrossAttentionCache() for _ in range(n_layers)]
        self.lengths: Tensor | None = None  # (B,) long
        self.longest = 0  # max(lengths): slots a growing cache's attention sees
        self.uniform = True  # every row holds `longest` positions
        self.capacity: int | None = None  # None: growing buffers; int: fixed (see module doc)

    def next_positions(self, count: int) -> Tensor:
        """(B, count): the slots (and default position ids) of each row's next `count`
        positions. Position ids equal slots for rows without padding in the cache; a
        left-padded batch passes its own position ids."""
        assert self.lengths is not None, "the first pass has no cached positions"
        return self.lengths[:, None] + torch.arange(count, device=self.lengths.device)

    def key_slots(self, count: int) -> int:
        """How many key slots attention sees after `count` new positions are written."""
        return self.capacity if self.capacity is not None else self.longest + count

    def query_offsets(self) -> Tensor | None:
        """(B,) each row's first new slot, for the mask; None when every row's new
        positions are the last slots attention sees (equal rows in a growing cache)."""
        if self.uniform and self.capacity is None:
            return None
        return self.lengths

    def advance(self, count: int, batch_size: int, device: torch.device) -> None:
        """Count `count` new positions in every row (after each layer wrote them)."""
        if self.lengths is None:
            self.lengths = torch.full((batch_size,), count, dtype=torch.long, device=device)
        elif self.capacity is None:
            self.lengths = self.lengths + count
        else:  # in place: a compiled step updates the tensor it was traced with
            self.lengths.add_(count)
        if self.capacity is None:
            self.longest += count

    def reserve(self, count: int) -> None:
        """Check that `count` more positions fit a fixed-capacity cache, before a step.

        A fixed-capacity cache counts its rows' positions only on the device (a host-side
        counter changed inside a compiled step would recompile it), so the caller states how
        many positions each step adds; a growing cache needs no reservation.
        """
        if self.capacity is None:
            return
        if self.longest + count > self.capacity:
            raise InputError(
                f"the KV cache is full ({self.capacity} slots); generate fewer tokens or "
                "fix a larger capacity (at most max_seq_len)"
            )
        self.longest += count

    def fix_capacity(self, capacity: int) -> None:
        """Move every layer's keys and values into buffers of `capacity` slots, which every
        later step attends over whole (a compiled decode step sees one shape)."""
        if self.lengths is None:
            raise InputError("fill the cache (e.g. with the prompt) before fixing its capacity")
        if self.longest > capacity:
            raise InputError(f"a KV cache of {capacity} slots cannot hold {self.longest} positions")
        for layer in self.self_attn:
            assert layer.key is not None and layer.value is not None
            layer.key = _resized(layer.key, capacity, self.longest)
            layer.value = _resized(layer.value, capacity, self.longest)
        self.capacity = capacity

    def fixed_buffers(self) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """A fixed-capacity cache as tensors: lengths (B,), keys and values per layer
        (B, H_kv, capacity, hd). A step compiled ahead of time takes these and writes them
        in place (`from_fixed_buffers` rebuilds the cache around them while it is traced)."""
        if self.capacity is None or self.lengths is None:
            raise InputError("fix the cache's capacity (after filling it) before a compiled step")
        keys = [layer.key for layer in self.self_attn]
        values = [layer.value for layer in self.self_attn]
        assert all(t is not None for t in (*keys, *values))
        return self.lengths, keys, values  # type: ignore[return-value]

    @classmethod
    def from_fixed_buffers(
        cls, lengths: Tensor, keys: list[Tensor], values: list[Tensor]
    ) -> KVCache:
        """The fixed-capacity cache that holds these buffers (see `fixed_buffers`)."""
        cache = cls(len(keys))
        for layer, key, value in zip(cache.self_attn, keys, values, strict=True):
            layer.key, layer.value = key, value
        cache.lengths, cache.capacity = lengths, keys[0].shape[2]
        return cache

    def drop_oldest(self, count: int) -> None:
        """Forget the `count` oldest slots of every row of a growing cache with rows of one
        length: a window sliding over a generation longer than the model's context. Later
        positions keep their ids (right for positions that only enter as distances)."""
        if self.capacity is not None or not self.uniform or count > self.longest:
            raise InputError("drop_oldest needs a growing cache whose rows hold >= count slots")
        for layer in self.self_attn:
            assert layer.key is not None and layer.value is not None
            layer.key, layer.value = layer.key[:, :, count:], layer.value[:, :, count:]
        assert self.lengths is not None
        self.lengths = self.lengths - count
        self.longest -= count

    def crop(self, lengths: Tensor) -> None:
        """Keep only the first lengths[b] positions of each row b (each <= what it holds):
        drops padding after a right-padded prompt, or tokens a row no longer wants."""
        if self.lengths is None or lengths.shape != self.lengths.shape:
            raise InputError("crop needs one length per row of a filled cache")
        if bool((lengths > self.lengths).any()) or bool((lengths < 0).any()):
            raise InputError("crop can only shorten rows")
        if self.capacity is None:
            self.lengths = lengths.to(self.lengths)
        else:
            self.lengths.copy_(lengths)
        self._read_lengths()

    def select(self, index: Tensor) -> None:
        """Keep batch rows `index`; a repeated index duplicates a row (one per beam)."""
        for layer in (*self.self_attn, *self.cross_attn):
            layer.select(index)
        if self.lengths is None:
            return
        if self.capacity is None:
            self.lengths = self.lengths[index]
        else:
            self.lengths.copy_(self.lengths[index])
        if not self.uniform:  # the rows kept may all have one length now
            self._read_lengths()

    def extend(self, other: KVCache) -> None:
        """Append the rows of `other`, a filled growing cache of the same model, after this
        cache's rows: a request that was prefilled alone joins the running batch (continuous
        batching). Each row keeps its own length; the slot buffers are padded to the longer
        of the two (slots past a row's length are never read)."""
        if other.lengths is None or other.capacity is not None or self.capacity is not None:
            raise InputError("extend joins a filled, growing cache to a growing cache")
        if any(layer.key is not None for layer in (*self.cross_attn, *other.cross_attn)):
            raise InputError("extend joins decoder-only caches (no cross-attention)")
        empty = self.lengths is None or len(self.lengths) == 0
        for mine, theirs in zip(self.self_attn, other.self_attn, strict=True):
            assert theirs.key is not None and theirs.value is not None
            if empty or mine.key is None or mine.value is None:
                mine.key, mine.value = theirs.key, theirs.value
                continue
            slots = max(mine.key.shape[2], theirs.key.shape[2])
            mine.key = torch.cat((_padded(mine.key, slots), _padded(theirs.key, slots)))
            mine.value = torch.cat((_padded(mine.value, slots), _padded(theirs.value, slots)))
        if empty or self.lengths is None:
            self.lengths = other.lengths
        else:
            self.lengths = torch.cat((self.lengths, other.lengths.to(self.lengths)))
        self._read_lengths()

    def _read_lengths(self) -> None:
        """Bring the host-side `longest` and `uniform` up to date with `lengths` (a sync)."""
        assert self.lengths is not None
        self.uniform = bool((self.lengths == self.lengths[0]).all()) if len(self.lengths) else True
        self.longest = int(self.lengths.max()) if len(self.lengths) else 0
