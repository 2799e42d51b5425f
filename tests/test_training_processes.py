"""Training across processes: resume after `kill -9`, and DDP (2 gloo processes) vs 1 process.

These start real `tformer train` processes (one thread each), as a user would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tformer.checkpoint import list_checkpoints
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
warmup_steps = 5
eval_every = 100
eval_batches = 2
log_every = 1
save_every = {save_every}
progress = false
seed = 3
precision = "fp32"  # the comparisons are exact: no bf16 autocast where "auto" would pick it
"""


def _recipe(tmp_path: Path, *, dropout=0.1, steps=400, save_every=100) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox {i * 7 % 13}\n" for i in range(400)))
    path = tmp_path / "recipe.toml"
    path.write_text(
        RECIPE.format(dropout=dropout, corpus=corpus, steps=steps, save_every=save_every)
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


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """Two `tformer train` processes with the environment torchrun gives its workers."""
    recipe = _recipe(tmp_path, dropout=0.0, steps=5, save_every=0)
    ddp_dir = tmp_path / "ddp"
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    workers = [
        subprocess.Popen(
            _train_command("--out", str(ddp_dir), str(recipe)),
            env=_env(**rendezvous, RANK=str(rank), LOCAL_RANK=str(rank)),
        )
        for rank in range(2)
    ]
    train_recipe(load_recipe(recipe), tmp_path / "single")
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    ddp = [m for m in read_metrics(ddp_dir) if m["kind"] == "train"]
    single = [m for m in read_metrics(tmp_path / "single") if m["kind"] == "train"]
    assert [m["step"] for m in ddp] == [1, 2, 3, 4, 5]
    for a, b in zip(ddp, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
