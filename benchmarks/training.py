"""Training-step cases: GPT (ours vs `transformers` GPT-2), the 2017 seq2seq model (ours vs
`torch.nn.Transformer`), and how our step's cost grows with sequence length and width."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.harness import Case, Contender, Step
from tformer import ModelConfig, build_model
from tformer.modules.position import sinusoidal_table

VOCAB = 65  # the character vocabulary of tinyshakespeare
GPT_SIZES = {  # name: (layers, width, heads, block, batch)
    "small": (4, 128, 4, 64, 12),
    "medium": (6, 384, 6, 256, 12),
}


def matmul_flops(model: nn.Module) -> int:
    """Multiply-adds x 2 of every nn.Linear per token: the "6N" of the training FLOPs rule."""
    return sum(
        2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)
    )


def training_flops(config: ModelConfig, *, tokens: int) -> float:
    """FLOPs of forward + backward (PaLM appendix B): 3 x (linear + attention) forward FLOPs.

    Attention counts the full T x T score and value products (4 * T * width per token and
    layer), as is conventional, although causal kernels may skip the masked half. The model is
    built on the meta device: shapes only, no memory.
    """
    with torch.device("meta"):
        linear_flops = matmul_flops(build_model(config))
    attention_flops = 4 * config.n_layers * config.max_seq_len * config.d_model
    per_token_forward = linear_flops + attention_flops
    return 3.0 * per_token_forward * tokens


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)


def _train_step(
    model: nn.Module, loss_fn: Callable[[], torch.Tensor], precision: str, device: torch.device
) -> Step:
    optimizer = _optimizer(model)
    model.train()

    def step() -> None:
        with _autocast(precision, device):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def gpt_config(layers: int, width: int, heads: int, block: int) -> ModelConfig:
    """Our GPT-2-shaped decoder: pre-norm, tanh-GELU, learned positions, tied output."""
    return ModelConfig(
        arch="decoder",
        vocab_size=VOCAB,
        d_model=width,
        n_heads=heads,
        n_layers=layers,
        d_ff=4 * width,
        max_seq_len=block,
        positional="learned",
        norm_position="pre",
        activation="gelu_tanh",
        dropout=0.0,
        pad_id=None,
    )


def _ours_gpt(config: ModelConfig, batch: int, precision: str, device: torch.device) -> Step:
    model = build_model(config).to(device)
    ids = torch.randint(VOCAB, (batch, config.max_seq_len), device=device)
    labels = torch.roll(ids, -1, dims=1)
    return _train_step(model, lambda: model(ids, labels=labels).loss, precision, device)


def _hf_gpt(
    config: ModelConfig, batch: int, precision: str, device: torch.device, attention: str
) -> Step:
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=config.max_seq_len,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation=attention,
    )
    model = GPT2LMHeadModel(hf_config).to(device)
    ids = torch.randint(VOCAB, (batch, config.max_seq_len), device=device)
    return _train_step(model, lambda: model(ids, labels=ids).loss, precision, device)


def gpt_training_case(size: str, precision: str, device: torch.device) -> Case:
    layers, width, heads, block, batch = GPT_SIZES[size]
    config = gpt_config(layers, width, heads, block)
    flops = training_flops(config, tokens=batch * block)
    contenders = [Contender("tformer", lambda: _ours_gpt(config, batch, precision, device), flops)]
    for attention in ("eager", "sdpa"):
        contenders.append(
            Contender(
                f"transformers-{attention}",
                lambda a=attention: _hf_gpt(config, batch, precision, device, a),
                flops,
                imports=("transformers.models.gpt2.modeling_gpt2",),
            )
        )
    return Case(
        name=f"gpt-train-{size}-{precision}",
        contenders=contenders,
        work_per_step=batch * block,
        unit="tokens",
        notes="forward + backward + fused AdamW; GPT2LMHeadModel with the same shape",
        params={"layers": layers, "width": width, "heads": heads, "block": block, "batch": batch},
    )


# ---- the 2017 encoder-decoder ---------------------------------------------------------------
class TorchSeq2Seq(nn.Module):
    """`torch.nn.Transformer` with the paper's embeddings (scaled, sinusoidal, shared) around it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.register_buffer("positions", sinusoidal_table(config.max_seq_len, config.d_model))
        self.scale = math.sqrt(config.d_model)
        self.transformer = nn.Transformer(
            config.d_model,
            config.n_heads,
            config.encoder_layers,
            config.decoder_layers,
            config.d_ff,
            dropout=config.dropout,
            batch_first=True,
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) * self.scale + self.positions[: ids.shape[1]]

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(
            target.shape[1], device=target.device
        )
        hidden = self.transformer(
            self.embed(source), self.embed(target), tgt_mask=causal, tgt_is_causal=True
        )
        return hidden @ self.embedding.weight.T  # output projection tied to the embeddings


def seq2seq_config(quick: bool) -> ModelConfig:
    """transformer-base at reduced width (and depth in quick mode)."""
    layers = 2 if quick else 6
    return ModelConfig.preset(
        "transformer-base", vocab_size=8000, d_model=256, n_heads=4, d_ff=1024, n_layers=layers
    )


def seq2seq_training_case(quick: bool, device: torch.device) -> Case:
    config = seq2seq_config(quick)
    batch, length = 16, 64

    def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source = torch.randint(3, config.vocab_size, (batch, length), device=device)
        target = torch.randint(3, config.vocab_size, (batch, length + 1), device=device)
        return source, target[:, :-1], target[:, 1:]

    def ours() -> Step:
        model = build_model(config).to(device)
        source, decoder_input, labels = data()
        return _train_step(
            model,
            lambda: model(source, decoder_input, labels=labels, label_smoothing=0.1).loss,
            "fp32",
            device,
        )

    def torch_transformer() -> Step:
        model = TorchSeq2Seq(config).to(device)
        source, decoder_input, labels = data()

        def loss() -> torch.Tensor:
            logits = model(source, decoder_input)
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), label_smoothing=0.1)

        return _train_step(model, loss, "fp32", device)

    return Case(
        name="seq2seq-train",
        contenders=[
            Contender("tformer", ours),
            Contender("torch.nn.Transformer", torch_transformer),
        ],
        work_per_step=batch * length,
        unit="target tokens",
        notes="transformer-base at d_model 256, 4 heads, d_ff 1024, dropout 0.1, label smoothing 0.1",
        params={"layers": config.n_layers, "d_model": 256, "batch": batch, "length": length},
    )


# ---- scaling ---------------------------------------------------------------------------------
def scaling_cases(quick: bool, device: torch.device) -> list[Case]:
    """Our GPT step as the sequence grows (width 128) and as the width grows (sequence 256)."""
    lengths = [128, 512] if quick else [128, 256, 512, 1024, 2048]
    widths = [128, 256] if quick else [128, 256, 512, 768]
    shapes = [("seq", length, 128) for length in lengths] + [("width", 256, w) for w in widths]
    cases = []
    for axis, length, width in shapes:
        config = gpt_config(4, width, width // 64, length)
        batch = max(1, 4096 // length)  # about 4k tokens per step at every length
        flops = training_flops(config, tokens=batch * length)
        cases.append(
            Case(
                name=f"scaling-{axis}-T{length}-d{width}",
                contenders=[
                    Contender(
                        "tformer",
                        lambda c=config, b=batch: _ours_gpt(c, b, "fp32", device),
                        flops,
                    )
                ],
                work_per_step=batch * length,
                unit="tokens",
                params={"seq_len": length, "width": width, "batch": batch, "layers": 4},
            )
        )
    return cases
