"""Real checkpoints in and out: Hugging Face directories and GGUF files.

Opening one is `tformer.load` (it recognises what a path holds); `save_hf_directory` writes a
model back in the layout `transformers` loads.
"""

from tformer.pretrained.hf import save_hf_directory

__all__ = ["save_hf_directory"]
