"""llama.cpp as a generation contender: batched greedy decoding through its C API.

`llama_cpp.Llama` (llama-cpp-python's high-level class) decodes a single sequence, so this
uses the C functions it wraps, as llama.cpp's own `batched` example does: every prompt is its
own sequence in one context, the prompts are prefilled in one `llama_decode` call and each
step decodes one token of every row in one call -- real batched decoding, no padding. The
next token is the argmax of the row's logits, and there is no EOS check at all, so every row
gets exactly the number of tokens asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

KV_CELLS = 256  # llama.cpp sizes each sequence's KV cache in multiples of this


def llama_cpp_decoder(
    gguf: Path, prompts: list[list[int]], max_new_tokens: int
) -> Callable[[int], torch.Tensor]:
    """A function n -> (rows, n) greedy new tokens for `prompts`, n <= max_new_tokens.

    Runs on the CPU with as many threads as torch uses, so both libraries get the same cores.
    """
    import llama_cpp as lc

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its log callback's filter
    lc.llama_backend_init()
    weights = lc.llama_model_load_from_file(str(gguf).encode(), lc.llama_model_default_params())
    if not weights:
        raise ValueError(f"llama.cpp could not load {gguf}")
    rows = len(prompts)
    cells = -(-(max(map(len, prompts)) + max_new_tokens) // KV_CELLS) * KV_CELLS
    params = lc.llama_context_default_params()
    params.n_ctx = rows * cells  # each sequence gets n_ctx / n_seq_max cells
    params.n_seq_max = rows
    params.n_batch = params.n_ubatch = max(sum(map(len, prompts)), rows)  # prefill in one call
    params.n_threads = params.n_threads_batch = torch.get_num_threads()
    context = lc.llama_init_from_model(weights, params)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(weights))
    batch = lc.llama_batch_init(params.n_batch, 0, 1)

    def run(entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) entries in one call."""
        batch.n_tokens = len(entries)
        for i, (token, position, sequence, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.logits[i] = token, position, logits
            batch.seq_id[i][0], batch.n_seq_id[i] = sequence, 1
        if (code := lc.llama_decode(context, batch)) != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def argmax(index: int) -> int:
        logits = lc.llama_get_logits_ith(context, index)  # the batch entry's row of logits
        return int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())

    def decode(n: int) -> torch.Tensor:
        lc.llama_memory_clear(lc.llama_get_memory(context), True)
        prefill = [
            (token, position, row, position == len(prompt) - 1)
            for row, prompt in enumerate(prompts)
            for position, token in enumerate(prompt)
        ]
        run(prefill)
        last = [i for i, entry in enumerate(prefill) if entry[3]]  # each row's last prompt token
        new = [[argmax(i)] for i in last]
        for step in range(1, n):
            run([(new[r][-1], len(p) + step - 1, r, True) for r, p in enumerate(prompts)])
            for r in range(rows):
                new[r].append(argmax(r))
        return torch.tensor(new)

    return decode
