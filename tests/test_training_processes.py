"""Training across processes: resume after `kill -9`; DDP and FSDP2 (2 gloo processes) vs 1
process; an FSDP run's sharded checkpoints resume exactly and its consolidated one loads.

These start real `tformer train` processes (one thread each), as a user would, with the
environment torchrun gives its workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tformer
from tformer.checkpoint import BEST, SHARDED, WEIGHTS_FILE, list_checkpoints, step_dir
from tformer.training import load_recipe, train_recipe
from tformer.training.metrics import read_metrics

RECIPE = """
[model]
arch = "decoder"
d_model = 32
n_heads = 4
n_layers = 2
d_ff = 64
max_seq_len = 16
norm_position = "pre"
dropout = {dropout}

[data]
task = "causal-lm"
path = "{corpus}"
tokenizer = "char"
block_size = 16
train_stride = 1

[training]
max_steps = {steps}
batch_size = 8
grad_accum_steps = {grad_accum_steps}
warmup_steps = 5
eval_every = 100
eval_batches = 2
log_every = 1
save_every = {save_every}
distributed = "{distributed}"
progress = false
seed = 3
precision = "fp32"  # the comparisons are exact: no bf16 autocast where "auto" would pick it
"""


LORA = """
[lora]
targets = "all-linear"
rank = 4
alpha = 8.0
"""


def _recipe(
    tmp_path: Path,
    *,
    dropout=0.1,
    steps=400,
    save_every=100,
    distributed="ddp",
    grad_accum_steps=1,
    lora=False,
) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox {i * 7 % 13}\n" for i in range(400)))
    path = tmp_path / "recipe.toml"
    path.write_text(
        RECIPE.format(
            dropout=dropout,
            corpus=corpus,
            steps=steps,
            save_every=save_every,
            distributed=distributed,
            grad_accum_steps=grad_accum_steps,
        )
        + (LORA if lora else "")
    )
    return path


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tformer.cli", "train", *args]


def _curve(run_dir: Path) -> list[tuple]:
    return [
        (m["step"], m.get("loss"), m.get("grad_norm"), m.get("val_loss"))
        for m in read_metrics(run_dir)
    ]


def test_resume_after_kill_9_is_bitwise_identical(tmp_path, torch_threads):
    torch_threads(1)  # as in the subprocesses: float sums then run in the same order
    recipe = _recipe(tmp_path, steps=200, save_every=50)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train_recipe(load_recipe(recipe), whole)

    process = subprocess.Popen(_train_command("--out", str(killed), str(recipe)), env=_env())
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step-00000050").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    survivors = list_checkpoints(killed)
    assert survivors and survivors[-1].name != "step-00000200"  # killed between checkpoints

    subprocess.run(_train_command("--resume", str(killed)), env=_env(), check=True)
    final = "checkpoints/step-00000200/model.safetensors"
    assert (whole / final).read_bytes() == (killed / final).read_bytes()
    assert _curve(whole) == _curve(killed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_torchrun_workers(command: list[str], n: int = 2) -> list[subprocess.Popen]:
    """`n` processes of `command` with the environment torchrun gives its workers."""
    rendezvous = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(n),
    }
    return [
        subprocess.Popen(command, env=_env(**rendezvous, RANK=str(rank), LOCAL_RANK=str(rank)))
        for rank in range(n)
    ]


def _succeed(workers: list[subprocess.Popen]) -> None:
    assert [w.wait(timeout=300) for w in workers] == [0] * len(workers)


@pytest.mark.parametrize("distributed", ["ddp", "fsdp", "fsdp+lora"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, distributed):
    """Each process's half of the global batch; the reduced gradient is the whole batch's,
    whether every process holds the model (DDP) or a shard of it (FSDP2; with LoRA, a
    frozen base sharded next to trainable adapters). Two micro-batches per step: the first
    accumulates without communication, the second reduces both."""
    strategy, _, lora = distributed.partition("+")
    recipe = _recipe(
        tmp_path, dropout=0.0, steps=5, save_every=0, distributed=strategy, grad_accum_steps=2,
        lora=bool(lora),
    )  # fmt: skip
    parallel_dir = tmp_path / strategy
    workers = _as_torchrun_workers(_train_command("--out", str(parallel_dir), str(recipe)))
    train_recipe(load_recipe(recipe), tmp_path / "single")
    _succeed(workers)
    parallel = [m for m in read_metrics(parallel_dir) if m["kind"] == "train"]
    single = [m for m in read_metrics(tmp_path / "single") if m["kind"] == "train"]
    assert [m["step"] for m in parallel] == [1, 2, 3, 4, 5]
    for a, b in zip(parallel, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-5)  # clipped at 1.0


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """A 2-process FSDP run of 6 steps (dropout on), sharded checkpoints at steps 3 and 6."""
    tmp_path = tmp_path_factory.mktemp("fsdp")
    recipe = _recipe(tmp_path, steps=6, save_every=3, distributed="fsdp")
    run_dir = tmp_path / "run"
    _succeed(_as_torchrun_workers(_train_command("--out", str(run_dir), str(recipe))))
    return run_dir


def test_fsdp_writes_consolidated_weights_only_in_the_final_and_best_checkpoints(fsdp_run):
    middle, final = step_dir(fsdp_run, 3), step_dir(fsdp_run, 6)
    assert all((d / SHARDED).is_dir() for d in (middle, final, fsdp_run / BEST))
    assert len(list((middle / SHARDED).glob("*.distcp"))) == 2  # one file per process
    assert not (middle / WEIGHTS_FILE).exists()
    assert (final / WEIGHTS_FILE).is_file() and (fsdp_run / BEST / WEIGHTS_FILE).is_file()
    with pytest.raises(tformer.CheckpointError, match="only the sharded state of an FSDP run"):
        tformer.load(middle)


def test_fsdp_resumed_from_a_sharded_checkpoint_repeats_the_uninterrupted_losses(
    fsdp_run, tmp_path
):
    """Stopped after step 3 (its later checkpoints removed), resumed from the shards: the
    same losses, gradient norms and final weights as the run that went on."""
    resumed = tmp_path / "resumed"
    shutil.copytree(fsdp_run, resumed)
    shutil.rmtree(step_dir(resumed, 6))
    shutil.rmtree(resumed / BEST)
    _succeed(_as_torchrun_workers(_train_command("--resume", str(resumed))))
    assert _curve(resumed) == _curve(fsdp_run)
    assert [m["step"] for m in read_metrics(resumed) if m["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    final = step_dir(fsdp_run, 6) / WEIGHTS_FILE
    assert (step_dir(resumed, 6) / WEIGHTS_FILE).read_bytes() == final.read_bytes()


SHARDED_LOGITS = """
import sys
from pathlib import Path

import torch

from tformer.checkpoint import SHARDED, read_config
from tformer.models import build_model
from tformer.training.distributed import init_distributed, wrap_model
from tformer.training.sharded import load_shards

checkpoint, out = Path(sys.argv[1]), Path(sys.argv[2])
ctx = init_distributed()
model = wrap_model(build_model(read_config(checkpoint)), ctx, "fsdp").eval()
load_shards(checkpoint / SHARDED, model, None)
with torch.no_grad():
    logits = model(torch.arange(16).remainder(model.config.vocab_size)[None]).logits
if ctx.is_main:
    torch.save(logits, out)
"""


def test_fsdp_consolidated_checkpoint_gives_the_sharded_models_logits(
    fsdp_run, tmp_path, torch_threads
):
    """The sharded model, loaded from its shards by 2 FSDP processes, and the consolidated
    model.safetensors, loaded by `tformer.load` in this one: the same logits."""
    torch_threads(1)
    checkpoint, out = step_dir(fsdp_run, 6), tmp_path / "logits.pt"
    script = tmp_path / "sharded_logits.py"
    script.write_text(SHARDED_LOGITS)
    _succeed(_as_torchrun_workers([sys.executable, str(script), str(checkpoint), str(out)]))
    model, _ = tformer.load(checkpoint)
    with torch.no_grad():
        logits = model(torch.arange(16).remainder(model.config.vocab_size)[None]).logits
    torch.testing.assert_close(logits, torch.load(out), rtol=0, atol=1e-6)
