"""Shared by the Hugging Face parity tests: perturbed random models, one forward pass of
each library on a padded batch, and the comparison on real positions."""

from __future__ import annotations

from pathlib import Path

import torch

import tformer

TOL = 1e-5


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every trained parameter (norms and biases too), so a swapped or dropped tensor
    shows; frozen ones (Marian's sinusoid tables) are fixed functions, left as they are."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def char_tokenizer(directory: Path, specials: dict[str, str]) -> tformer.Tokenizer:
    """A small character tokenizer (specials first, ids 0, 1, ...) for pipeline and CLI tests
    on random models, trained on a pangram written to `directory`."""
    corpus = directory / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n")
    return tformer.Tokenizer.train_char([corpus], specials)


def run_hf(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :6],
                        decoder_attention_mask=mask[:, :6], output_hidden_states=True)  # fmt: skip
            return {"logits": out.logits, "hidden": out.encoder_last_hidden_state}
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logits = getattr(out, "logits", None)
        if hasattr(out, "start_logits"):  # question answering: (B, T, 2), as run_tformer's
            logits = torch.stack((out.start_logits, out.end_logits), dim=-1)
        # the last entry is after the final norm (GPT-2, Llama), like tformer's last_hidden_state
        hidden = out.hidden_states[-1] if out.hidden_states else out.last_hidden_state
        return {"logits": logits, "hidden": hidden}


def run_tformer(model: tformer.TformerModel, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    with torch.no_grad():
        if model.config.arch == "encoder-decoder":
            out = model(ids, ids[:, :6], attention_mask=mask, decoder_attention_mask=mask[:, :6])
            return {"logits": out.logits, "hidden": out.encoder_last_hidden_state}
        out = model(ids, attention_mask=mask)
        logits = out.logits
        if model.config.task_head == "question-answering":  # (B, 2, T) -> (B, T, 2)
            logits = logits.transpose(1, 2)
        return {"logits": logits, "hidden": out.last_hidden_state}


def assert_close(ours: dict, theirs: dict, mask: torch.Tensor, tol: float = TOL) -> None:
    """Equal within `tol` on real (unpadded) positions; also non-trivial outputs."""
    for key in ("hidden", "logits"):
        a, b = ours[key], theirs[key]
        if b is None:
            continue
        assert a is not None and a.shape == b.shape, key
        if a.dim() == 3:
            rows = mask[:, : a.shape[1]].bool()
            a, b = a[rows], b[rows]
        assert b.std() > 1e-2, f"{key}: reference output is degenerate"
        assert (a - b).abs().max().item() <= tol, f"{key}: max diff {(a - b).abs().max()}"
