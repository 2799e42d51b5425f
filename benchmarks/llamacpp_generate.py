"""`python -m benchmarks.llamacpp_generate MODEL.gguf PROMPT N THREADS`: llama.cpp's start-up
as a user meets it. Loads the GGUF with llama-cpp-python's `Llama` and streams N greedy
tokens of a completion of PROMPT to stdout, each flushed as it comes (the start-up case times
the first)."""

from __future__ import annotations

import sys


def main() -> None:
    import llama_cpp

    path, prompt, new_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    model = llama_cpp.Llama(
        path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    for chunk in model(prompt, max_tokens=new_tokens, temperature=0.0, stream=True):
        print(chunk["choices"][0]["text"], end="", flush=True)
    print()


if __name__ == "__main__":
    main()
