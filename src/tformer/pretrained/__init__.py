"""Real checkpoints in and out: Hugging Face directories and GGUF files.

Opening one is `tformer.load` (it recognises what a path holds); `save_hf_directory` writes a
model back in the layout `transformers` loads, `save_gguf` as a file llama.cpp runs.
"""

from tformer.pretrained.gguf_export import save_gguf
from tformer.pretrained.hf import save_hf_directory

__all__ = ["save_gguf", "save_hf_directory"]
