"""Encoder inference: all-MiniLM-L6-v2 sentence embeddings, ours (float32, and bfloat16 as
`tformer embed --precision bf16` runs it) vs `transformers` BertModel and ONNX Runtime (fp32,
and int8 weights quantised dynamically: sentence-transformers' CPU recipe). Every other
contender's embeddings are checked against our float32 ones (cosine similarity)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.harness import Case, Contender, Step
from benchmarks.onnx_minilm import exported
from tformer.assets import minilm_directory

SENTENCES = [
    "The cat sat on the mat.",
    "A transformer maps a sequence of vectors to another sequence of vectors.",
    "Hi!",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates "
    "by half a percentage point, the largest increase in more than two decades.",
    "Où est la bibliothèque ?",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.",
    "Embeddings place similar sentences close together.",
    "The match ended in a draw.",
]
BATCH = 32


def _batch(directory: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """32 mixed-length sentences tokenised once, so both contenders embed the same ids."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    tokenizer.enable_truncation(max_length=256)
    encodings = tokenizer.encode_batch([SENTENCES[i % len(SENTENCES)] for i in range(BATCH)])
    ids = torch.tensor([e.ids for e in encodings], device=device)
    mask = torch.tensor([e.attention_mask for e in encodings], device=device)
    return ids, mask


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)


def _ours(
    directory: Path, device: torch.device, dtype: torch.dtype = torch.float32
) -> Callable[[], torch.Tensor]:
    """One batch's embeddings (B, 384) by tformer, its encoder in `dtype`."""
    import tformer

    model, _ = tformer.load(directory, dtype=dtype)
    model = model.to(device).eval()
    ids, mask = _batch(directory, device)

    def embed() -> torch.Tensor:
        with torch.inference_mode():
            hidden = model(ids, attention_mask=mask).last_hidden_state.float()
            return _mean_pool(hidden, mask)

    return embed


def _transformers(directory: Path, device: torch.device) -> Callable[[], torch.Tensor]:
    from transformers import BertModel

    model = BertModel.from_pretrained(directory, attn_implementation="sdpa").to(device).eval()
    ids, mask = _batch(directory, device)

    def embed() -> torch.Tensor:
        with torch.inference_mode():
            return _mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    return embed


def _onnxruntime(kind: str, directory: Path, device: torch.device) -> Callable[[], torch.Tensor]:
    """ONNX Runtime's CPU session over the exported model, with torch's thread count."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "onnxruntime is not installed; benchmarking it needs pip install -e '.[bench]'"
        ) from error
    if device.type != "cpu":
        raise ImportError("the ONNX Runtime contenders run on the CPU only")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(
        str(exported(directory, kind)), options, providers=["CPUExecutionProvider"]
    )
    ids, mask = _batch(directory, device)
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    feed["token_type_ids"] = torch.zeros_like(ids).numpy()

    def embed() -> torch.Tensor:
        hidden = torch.from_numpy(session.run(None, feed)[0])
        return _mean_pool(hidden, mask)

    return embed


def _cosines(directory: Path, device: torch.device) -> dict[str, dict[str, float]]:
    """Each compared contender's lowest cosine similarity to our float32 embeddings over the
    batch."""
    reference = _ours(directory, device)()
    found = {}
    for name, make in COMPARED.items():
        try:
            embeddings = make(directory, device)()
        except ImportError:
            continue
        found[name] = {"min_cosine_vs_tformer": float((embeddings * reference).sum(-1).min())}
    return found


# every contender but the reference (our float32 encoder), whose embeddings they are checked against
COMPARED: dict[str, Callable[[Path, torch.device], Callable[[], torch.Tensor]]] = {
    "tformer-bf16": functools.partial(_ours, dtype=torch.bfloat16),
    "transformers-sdpa": _transformers,
    "onnxruntime-fp32": functools.partial(_onnxruntime, "fp32"),
    "onnxruntime-int8": functools.partial(_onnxruntime, "int8"),
}
IMPORTS = {
    "tformer-bf16": (),
    "transformers-sdpa": ("transformers.models.bert.modeling_bert",),
    "onnxruntime-fp32": ("onnxruntime",),
    "onnxruntime-int8": ("onnxruntime",),
}


def encoder_inference_case(device: torch.device) -> Case:
    directory = minilm_directory()

    def setup(make: Callable[[Path, torch.device], Callable[[], torch.Tensor]]) -> Step:
        embed = make(directory, device)

        def step() -> None:
            embed()

        return step

    contenders = [Contender("tformer", functools.partial(setup, _ours))]
    contenders += [
        Contender(name, functools.partial(setup, make), imports=IMPORTS[name])
        for name, make in COMPARED.items()
    ]
    return Case(
        name="encoder-embed-minilm",
        contenders=contenders,
        work_per_step=BATCH,
        unit="sentences",
        ours=("tformer", "tformer-bf16"),
        notes="all-MiniLM-L6-v2, batch 32 of mixed-length sentences, mean pooling + L2 norm; "
        "ONNX Runtime: BertModel exported by torch.onnx (dynamo), int8 = its quantize_dynamic",
        params={"batch": BATCH},
        checks=lambda: _cosines(directory, device),
    )
