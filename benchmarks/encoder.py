"""Encoder inference: all-MiniLM-L6-v2 sentence embeddings, ours vs `transformers` BertModel."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.harness import Case, Contender, Step
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


def encoder_inference_case(device: torch.device) -> Case:
    directory = minilm_directory()

    def ours() -> Step:
        import tformer

        model, _ = tformer.load(directory)
        model = model.to(device).eval()
        ids, mask = _batch(directory, device)

        def step() -> None:
            with torch.inference_mode():
                _mean_pool(model(ids, attention_mask=mask).last_hidden_state, mask)

        return step

    def transformers_bert() -> Step:
        from transformers import BertModel

        model = BertModel.from_pretrained(directory, attn_implementation="sdpa").to(device).eval()
        ids, mask = _batch(directory, device)

        def step() -> None:
            with torch.inference_mode():
                _mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

        return step

    return Case(
        name="encoder-embed-minilm",
        contenders=[
            Contender("tformer", ours),
            Contender(
                "transformers-sdpa",
                transformers_bert,
                imports=("transformers.models.bert.modeling_bert",),
            ),
        ],
        work_per_step=BATCH,
        unit="sentences",
        notes="all-MiniLM-L6-v2, batch 32 of mixed-length sentences, mean pooling + L2 norm",
        params={"batch": BATCH},
    )
