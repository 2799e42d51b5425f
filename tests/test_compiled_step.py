"""The compiled decode step: an AOTInductor package found again by what it depends on, a
just-in-time step elsewhere, and neither computing with weights the model no longer holds.

References: eager decoding of the same model (tokens), hand-counted capacities."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from tformer import ModelConfig, build_model, kernels
from tformer.generation import compiled, generate
from tformer.modules.kv_cache import KVCache


def llama(**changes: object) -> torch.nn.Module:
    """A 2-layer llama-shaped decoder with peaked distributions (few near-ties)."""
    fields = dict(
        arch="decoder", vocab_size=37, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
        d_ff=48, max_seq_len=40, dropout=0.0, pad_id=0, bos_id=1, eos_id=2, bias=False,
        tie_embeddings=False, positional="rotary", norm="rmsnorm", norm_position="pre",
        activation="swiglu",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(ModelConfig(**(fields | changes))).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model


PROMPTS = torch.tensor([[1, 5, 7, 9, 11], [0, 0, 1, 4, 6]])  # the second left-padded
MASK = (PROMPTS != 0).long()
OPTIONS = dict(max_new_tokens=12, eos_token_id=[])


@pytest.mark.parametrize(
    ("needed", "limit", "slots"),
    [(72, 2048, 128), (128, 2048, 128), (129, 200, 200), (1, 40, 1), (33, 40, 40), (40, 40, 40)],
)
def test_step_capacity_is_the_next_power_of_two_within_the_context(needed, limit, slots) -> None:
    assert compiled.step_capacity(needed, limit) == slots


def test_weights_digest_follows_the_bytes_not_the_object() -> None:
    model = llama()
    twin = copy.deepcopy(model)
    assert compiled.weights_digest(model) == compiled.weights_digest(twin)
    with torch.no_grad():
        next(twin.parameters())[0, 0] += 1
    assert compiled.weights_digest(twin) != compiled.weights_digest(model)


def _step_args(batch: int, capacity: int) -> tuple:
    cache = KVCache.from_fixed_buffers(
        torch.zeros(batch, dtype=torch.long),
        [torch.zeros(batch, 2, capacity, 8) for _ in range(2)],
        [torch.zeros(batch, 2, capacity, 8) for _ in range(2)],
    )
    ids = torch.zeros(batch, 1, dtype=torch.long)
    return (ids, torch.zeros(batch, capacity, dtype=torch.long), ids, *cache.fixed_buffers())


def test_a_package_is_named_by_weights_and_input_shapes(tmp_path) -> None:
    model = llama()
    step = compiled.PackagedStep(model, model.forward, tmp_path)
    path = step._package(_step_args(1, 16))
    assert path == step._package(_step_args(1, 16))
    assert path.parent == tmp_path and path.suffix == ".pt2"
    others = {step._package(_step_args(2, 16)), step._package(_step_args(1, 32))}
    other = llama(d_ff=64)
    other_weights = compiled.PackagedStep(other, other.forward, tmp_path)
    others.add(other_weights._package(_step_args(1, 16)))
    assert path not in others and len(others) == 3


def test_a_package_is_named_by_the_cpus_features_not_its_capability_alone(
    monkeypatch, tmp_path
) -> None:
    """An AMX Xeon and an AVX-512 EPYC both report AVX512; a cache directory shared by both
    must not hand one the other's package."""
    model = llama()
    step = compiled.PackagedStep(model, model.forward, tmp_path)
    paths = set()
    for flags in ({"avx512f"}, {"avx512f", "amx_tile"}):
        cpu = kernels.CPUInfo("x", "AVX512", True, "cpu flags", frozenset(flags))
        monkeypatch.setattr(kernels, "cpu_info", lambda cpu=cpu: cpu)
        paths.add(step._package(_step_args(1, 16)))
    assert len(paths) == 2


def _aged_packages(directory, count: int) -> list:
    """`count` package files, the first the most recently used (a minute apart)."""
    paths = [directory / f"{i}.pt2" for i in range(count)]
    for age, path in enumerate(paths):
        path.write_bytes(b"")
        os.utime(path, (1e9 - 60 * age, 1e9 - 60 * age))
    return paths


def test_only_the_most_recently_used_packages_are_kept(tmp_path) -> None:
    paths = _aged_packages(tmp_path, 5)
    partial = tmp_path / ".9.1234.pt2"  # another process is writing it
    partial.write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    compiled.remove_unused_packages(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".9.1234.pt2",
        "0.pt2",
        "1.pt2",
        "notes.txt",
    ]
    assert paths[0].exists() and paths[1].exists()


def test_using_a_package_keeps_it_and_writing_one_removes_the_oldest(monkeypatch, tmp_path) -> None:
    model = llama()
    step = compiled.PackagedStep(model, model.forward, tmp_path)
    args = _step_args(1, 16)
    path = step._package(args)
    monkeypatch.setattr(compiled, "_loaded", lambda found: lambda *inputs: found)
    monkeypatch.setattr(compiled, "KEPT_PACKAGES", 3)
    old = _aged_packages(tmp_path, 3)
    monkeypatch.setattr(step, "_compile", lambda args, into: into.write_bytes(b""))
    step._prepare(args[0], args[1], args[2], KVCache.from_fixed_buffers(*args[3:]))
    assert path.exists() and old[0].exists() and old[1].exists() and not old[2].exists()

    os.utime(path, (1e8, 1e8))  # the oldest now; found again, it becomes the newest
    compiled.PackagedStep(model, model.forward, tmp_path)._prepare(
        args[0], args[1], args[2], KVCache.from_fixed_buffers(*args[3:])
    )
    assert path.stat().st_mtime > old[0].stat().st_mtime


def test_cache_off_compiles_just_in_time(monkeypatch) -> None:
    model = llama()
    monkeypatch.setenv("TFORMER_CACHE_DIR", "off")
    assert not isinstance(compiled.decode_step(model, model.forward), compiled.PackagedStep)
    monkeypatch.delenv("TFORMER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent")
    assert isinstance(compiled.decode_step(model, model.forward), compiled.PackagedStep)


def test_an_unwritable_cache_falls_back_to_the_just_in_time_step(
    monkeypatch, tmp_path, capsys
) -> None:
    """A cache directory that cannot be made costs the package, not the generation."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TFORMER_CACHE_DIR", str(blocker))
    monkeypatch.setattr(torch, "compile", lambda forward, **options: forward)  # eager, fast
    model = llama()
    tokens = generate(model, PROMPTS, MASK, compile_step=True, **OPTIONS)
    assert torch.equal(tokens, generate(model, PROMPTS, MASK, **OPTIONS))
    assert "not keeping the compiled decode step" in capsys.readouterr().err


def test_compiled_code_is_dropped_when_weights_changed_in_place(monkeypatch) -> None:
    """Frozen weights are constants of the just-in-time step: a new step for the same model
    after an in-place change (what guards cannot see) must drop the old code; unchanged
    weights or another model keep it."""
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(torch, "compile", lambda forward, **options: forward)
    model, other = llama(), llama(d_ff=64)
    compiled.compiled_step(model, model.forward)
    compiled.compiled_step(model, model.forward)
    compiled.compiled_step(other, other.forward)
    assert not resets
    with torch.no_grad():
        next(model.parameters()).mul_(2)
    compiled.compiled_step(model, model.forward)
    assert len(resets) == 1
    with torch.no_grad():
        model.load_state_dict(model.state_dict())
    compiled.compiled_step(model, model.forward)
    assert len(resets) == 2


@pytest.mark.slow
@pytest.mark.parametrize("packaged", [True, False], ids=["ahead-of-time", "just-in-time"])
def test_compiled_decoding_follows_weights_changed_in_place(monkeypatch, packaged) -> None:
    """The real compilers: compiled decoding (a padded batch, in inference mode as the CLI
    runs it) gives eager decoding's tokens, again after an in-place change of the weights;
    the package is compiled once per weights and found again by later generations."""
    if not packaged:
        monkeypatch.setenv("TFORMER_CACHE_DIR", "off")
    model = llama()
    compiles = []
    original = compiled.PackagedStep._compile
    monkeypatch.setattr(
        compiled.PackagedStep, "_compile", lambda *a: compiles.append(1) or original(*a)
    )
    for _ in range(2):
        eager = generate(model, PROMPTS, MASK, **OPTIONS)
        for _ in range(2):
            with torch.inference_mode():
                tokens = generate(model, PROMPTS, MASK, compile_step=True, **OPTIONS)
            assert torch.equal(tokens, eager)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-1)
    assert len(compiles) == (2 if packaged else 0)


@pytest.mark.slow
def test_compiled_bf16_decoding_gives_eager_tokens(monkeypatch) -> None:
    """A bf16 model's compiled step reads the CPU's bf16 support as a constant
    (`kernels.attention_dtype`: float32 attention and cache where bf16 is emulated), in one
    graph, and decodes eager decoding's tokens."""
    monkeypatch.setenv("TFORMER_CACHE_DIR", "off")
    model = llama().to(torch.bfloat16)
    eager = generate(model, PROMPTS, MASK, **OPTIONS)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch.inference_mode():
        tokens = generate(model, PROMPTS, MASK, compile_step=True, **OPTIONS)
    assert torch.equal(tokens, eager)
    assert not torch._dynamo.utils.counters["graph_break"]  # one graph: no query traced
