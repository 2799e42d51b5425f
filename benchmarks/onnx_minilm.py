"""all-MiniLM-L6-v2 as ONNX Runtime runs it: the CPU recipe sentence-transformers recommends.

The model is exported from `transformers`' BertModel with `torch.onnx.export` (the dynamo
exporter; it needs `onnxscript`) and, for the int8 contender, quantised with ONNX Runtime's
own `quantize_dynamic`: int8 weights with a scale per output channel (sentence-transformers'
avx512_vnni configuration is per-channel too), activations quantised on the fly. Exporting takes
seconds and allocates a whole traced model, so it runs once per machine in a process of its
own (`python -m benchmarks.onnx_minilm MODEL_DIR OUT_DIR`) and the files are reused: a
contender's process then only loads them, and its peak memory is that of ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
RECIPE = "torch.onnx dynamo export; quantize_dynamic QInt8 per-channel"  # part of the cache key
FILES = {"fp32": "minilm.onnx", "int8": "minilm-int8.onnx"}


def exported(model_dir: Path, kind: str) -> Path:
    """The ONNX file of `kind` ("fp32" or "int8") for the model in `model_dir`, exported on
    first use into a temporary directory named after the model's weights."""
    weights = model_dir / "model.safetensors"
    stamp = f"{weights.resolve()}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}:{RECIPE}"
    out = (
        Path(tempfile.gettempdir())
        / f"tformer-bench-onnx-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
    )
    if not all((out / name).is_file() for name in FILES.values()):
        command = [sys.executable, "-m", "benchmarks.onnx_minilm", str(model_dir), str(out)]
        subprocess.run(command, check=True, capture_output=True, text=True)
    return out / FILES[kind]


def export(model_dir: Path, out: Path) -> None:
    """Write the fp32 export and its dynamically quantised int8 copy into `out`."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertModel

    class LastHiddenState(torch.nn.Module):
        """BertModel with positional inputs and one output, as the exporter wants."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
        ) -> torch.Tensor:
            return self.bert(
                input_ids=ids, attention_mask=mask, token_type_ids=types
            ).last_hidden_state

    model = LastHiddenState(
        BertModel.from_pretrained(model_dir, attn_implementation="eager")
    ).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding in the example, so the mask's path is traced
    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / FILES["fp32"], out / FILES["int8"]
    axes = {name: {0: "batch", 1: "length"} for name in (*INPUTS, "last_hidden_state")}
    torch.onnx.export(
        model,
        (ids, mask, torch.zeros_like(ids)),
        str(fp32.with_suffix(".tmp")),
        input_names=list(INPUTS),
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        dynamo=True,
        external_data=False,
    )
    fp32.with_suffix(".tmp").rename(fp32)
    quantize_dynamic(
        str(fp32), str(int8.with_suffix(".tmp")), weight_type=QuantType.QInt8, per_channel=True
    )
    int8.with_suffix(".tmp").rename(int8)


if __name__ == "__main__":
    export(Path(sys.argv[1]), Path(sys.argv[2]))
