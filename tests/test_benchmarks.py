"""The benchmark harness: interleaved timing, ratios, MFU, the written report, and the
generation cases' machinery (worker processes, contenders, perplexity) on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tformer
from benchmarks.__main__ import schedule
from benchmarks.decoders import BY_NAME, Generator, Ours, Weights
from benchmarks.decoding import decode_step, generation_case
from benchmarks.harness import Case, Contender, run_case
from benchmarks.isolation import WorkerError, WorkerStep
from benchmarks.perplexity import perplexity_checks, step_perplexity
from benchmarks.report import markdown, rows, write
from benchmarks.time_to_target import TrainingRun
from benchmarks.training import gpt_config, matmul_flops, training_flops
from tformer import ModelConfig, build_model
from tformer.pretrained import save_hf_directory

CPU = torch.device("cpu")
FACTS = {
    "device": "cpu",
    "cpu_model": "test CPU",
    "cpu_capability": "AVX2",
    "native_bf16": False,
    "amx": False,
    "torch": "x",
    "matmul_fp32_gflops": 1.0,
    "matmul_bf16_gflops": 2.0,
}


class FakeClock:
    """perf_counter stand-in: each step advances it by a known amount, so the test is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def step_taking(self, seconds: float):
        def step() -> None:
            self.now += seconds

        return lambda: step


def test_interleaved_rounds_give_ratios_of_medians(tmp_path: Path, monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    case = Case(
        name="toy",
        contenders=[
            Contender("tformer", clock.step_taking(0.002), 1e6),
            Contender("peer", clock.step_taking(0.006)),
        ],
        work_per_step=10,
        unit="items",
    )
    measured = run_case(case, rounds=3, steps_per_round=2, warmup=0, device=CPU)
    records = rows(measured, {("toy", "tformer"): 5.0}, [case], FACTS)
    ours, peer = records
    assert ours["rounds"] == 3 and peer["ours_over_peer"] == {}
    assert ours["ours_over_peer"] == {"peer": pytest.approx(3.0)}  # steps of 2 ms vs 6 ms
    assert ours["median"] == pytest.approx(10 / 0.002)  # 10 items per 2 ms step
    # MFU = flops/step * steps/s / peak: 1e6 flops per 2 ms step on a 1 GFLOP/s machine.
    assert ours["mfu"] == pytest.approx(0.5)
    write(records, FACTS, tmp_path / "result")
    lines = (tmp_path / "result.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["machine"] == FACTS and len(lines) == 3
    assert (
        "| toy | tformer | 5000.0 items/s | 5000.0–5000.0 | 5 | 3.00x peer | 50% |"
        in (tmp_path / "result.md").read_text()
    )
    assert (tmp_path / "result.png").stat().st_size > 0


def test_each_of_our_variants_gets_a_ratio_against_every_peer(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    milliseconds = {"transformers": 4, "tformer": 2, "tformer-bf16": 1, "llama.cpp": 0.5}
    case = Case(
        name="generation",
        contenders=[Contender(n, clock.step_taking(ms / 1000)) for n, ms in milliseconds.items()],
        work_per_step=10,
        unit="new tokens",
        ours=("tformer", "tformer-bf16"),
    )
    measured = run_case(case, rounds=2, steps_per_round=1, warmup=0, device=CPU)
    checks = {("generation", "tformer-bf16"): {"perplexity": 22.0, "perplexity_vs_fp32_pct": 0.5}}
    records = {r["contender"]: r for r in rows(measured, {}, [case], FACTS, checks)}
    # tformer: 2 ms a step against 4 ms (2x) and 0.5 ms (0.25x); bf16: 1 ms, so 4x and 0.5x.
    assert records["tformer"]["ours_over_peer"] == pytest.approx(
        {"transformers": 2.0, "llama.cpp": 0.25}
    )
    assert records["tformer-bf16"]["ours_over_peer"] == pytest.approx(
        {"transformers": 4.0, "llama.cpp": 0.5}
    )
    assert records["transformers"]["ours_over_peer"] == records["llama.cpp"]["ours_over_peer"] == {}
    table = markdown(list(records.values()), FACTS)
    assert "| 4.00x transformers, 0.50x llama.cpp |" in table
    assert "| generation | tformer-bf16 | 22.000 | 0.500 |" in table  # the checks table


def test_matmul_flops_counts_every_linear_layer() -> None:
    config = gpt_config(layers=2, width=32, heads=4, block=16)
    model = build_model(config)
    # Per layer: q, k, v, out (4 x 32x32) + up, down (2 x 32x128); plus the 32 x 65 output.
    expected = 2 * (2 * (4 * 32 * 32 + 2 * 32 * 128) + 32 * 65)
    assert matmul_flops(model) == expected
    attention = 4 * 2 * 16 * 32  # 4 * layers * seq_len * width per token
    assert training_flops(config, tokens=10) == 3 * (expected + attention) * 10


def test_explicit_rounds_win_over_the_case_and_the_case_over_the_mode() -> None:
    case = Case("long", [], work_per_step=1, unit="x", rounds=2, steps_per_round=1, warmup=0)
    plain = Case("short", [], work_per_step=1, unit="x")

    def args(rounds: int | None, quick: bool) -> object:
        return type("Args", (), {"rounds": rounds, "quick": quick})()

    assert schedule(case, args(5, False)) == {"rounds": 5, "steps_per_round": 1, "warmup": 0}
    assert schedule(case, args(None, False))["rounds"] == 2
    assert schedule(plain, args(None, True)) == {"rounds": 3, "steps_per_round": 2, "warmup": 2}
    assert schedule(plain, args(None, False))["rounds"] == 7


# ---- generation cases, on a tiny random Llama instead of SmolLM2 ---------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Weights:
    """A 2-layer Llama-shaped model as a Hugging Face directory (no GGUF: llama.cpp is not run)."""
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "llama-mini", vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=64
    )
    folder = tmp_path_factory.mktemp("tiny") / "float32"
    return Weights(gguf=Path("unused.gguf"), float32=save_hf_directory(build_model(config), folder))


def _tiny_case(tiny: Weights, names: list[str], **options: object) -> Case:
    generators = [BY_NAME[name] for name in names]
    prompts = [[5, 6, 7, 8], [9, 10]]  # different lengths: the second row is left-padded
    return generation_case(
        "generation-tiny",
        generators,
        batch=2,
        new_tokens=2,
        inputs=lambda: (tiny, prompts),
        **options,
    )


def test_generation_contenders_time_exactly_n_new_tokens_per_row(tiny: Weights) -> None:
    pytest.importorskip("transformers")
    names = ["transformers", "tformer", "tformer-bf16", "tformer-int8", "tformer-nocache"]
    case = _tiny_case(tiny, names, isolated=False)
    assert case.ours == ("tformer", "tformer-bf16", "tformer-int8", "tformer-nocache")
    assert case.work_per_step == 4  # 2 rows x 2 new tokens
    measured = run_case(case, rounds=2, steps_per_round=1, warmup=1, device=CPU)
    assert [m.contender for m in measured] == names
    assert all(len(m.throughputs) == 2 and m.median > 0 for m in measured)


def test_a_prefill_case_counts_the_prompts_tokens(tiny: Weights) -> None:
    pytest.importorskip("transformers")
    prompt = list(range(3, 43))  # 40 tokens
    case = generation_case(
        "prefill-tiny",
        [BY_NAME[name] for name in ("transformers", "tformer")],
        batch=1,
        new_tokens=1,
        inputs=lambda: (tiny, [prompt]),
        isolated=False,
        prompt_tokens=len(prompt),
    )
    assert (case.work_per_step, case.unit) == (40, "prompt tokens")
    measured = run_case(case, rounds=1, steps_per_round=1, warmup=0, device=CPU)
    assert [m.contender for m in measured] == ["transformers", "tformer"]
    assert all(m.median > 0 for m in measured)


def test_a_contender_that_stops_early_fails_the_step(tiny: Weights, monkeypatch) -> None:
    def short(weights: Weights, prompts: list[list[int]], max_new_tokens: int):
        return lambda n: torch.zeros(len(prompts), n - 1, dtype=torch.long)

    monkeypatch.setitem(BY_NAME, "short", Generator("short", short))
    step = decode_step("short", "unused.gguf", str(tiny.float32), [[5, 6]], new_tokens=3)
    with pytest.raises(
        RuntimeError, match=r"short returned \(1, 2\) new tokens, expected \(1, 3\)"
    ):
        step()


def test_a_missing_library_leaves_out_only_its_contender(tiny: Weights, capsys) -> None:
    absent = Generator("absent", BY_NAME["tformer"].load, imports=("no_such_module",), extra="x")
    case = generation_case(
        "generation-tiny",
        [BY_NAME["tformer"], absent],
        batch=1,
        new_tokens=2,
        inputs=lambda: (tiny, [[5, 6]]),
        isolated=False,
    )
    measured = run_case(case, rounds=1, steps_per_round=1, warmup=0, device=CPU)
    assert [m.contender for m in measured] == ["tformer"]
    message = capsys.readouterr().out
    assert "absent left out: no_such_module is not installed" in message
    assert "pip install -e '.[x]'" in message


def test_worker_processes_time_the_step_and_report_their_peak_memory(tiny: Weights) -> None:
    measured = run_case(
        _tiny_case(tiny, ["tformer"]), rounds=2, steps_per_round=1, warmup=1, device=CPU
    )
    assert len(measured[0].throughputs) == 2
    assert measured[0].peak_mib is not None and measured[0].peak_mib > 0
    with pytest.raises(WorkerError, match="KeyError: 'no-such-contender'"):
        kwargs = {"generator": "no-such-contender", "gguf": "x", "float32": "y"}
        WorkerStep("benchmarks.decoding:decode_step", kwargs | {"prompts": [], "new_tokens": 1})


def test_perplexity_checks_each_precision_against_float32(tiny: Weights) -> None:
    generators = [BY_NAME[n] for n in ("tformer", "tformer-bf16", "tformer-int8")]
    generators.append(BY_NAME["tformer-static"])  # same numbers as float32: not checked
    # a step option is checked through the step (compile_step=False: the eager step, fast)
    generators.append(Generator("tformer-step", Ours(options={"compile_step": False})))
    ids = torch.randint(3, 64, (1, 40))
    checks = perplexity_checks(generators, tiny, ids)
    assert set(checks) == {"tformer", "tformer-bf16", "tformer-int8", "tformer-step"}
    model, _ = tformer.load(tiny.float32)
    with torch.no_grad():
        logits = model(ids[:, :-1]).logits
    expected = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).exp().item()
    assert checks["tformer"]["perplexity"] == pytest.approx(expected, rel=1e-5)
    for name in ("tformer-bf16", "tformer-int8", "tformer-step"):
        ratio = checks[name]["perplexity"] / expected
        assert checks[name]["perplexity_vs_fp32_pct"] == pytest.approx(100 * (ratio - 1))
    assert checks["tformer-step"]["perplexity"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("options", [{}, {"static_cache": True}])
def test_step_perplexity_feeds_the_true_tokens_through_the_decode_step(
    tiny: Weights, options: dict[str, bool]
) -> None:
    model, _ = tformer.load(tiny.float32)
    ids = torch.randint(3, 64, (1, 30))
    with torch.no_grad():
        logits = model(ids[:, :-1]).logits  # one pass: the independent reference
    expected = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).exp().item()
    assert step_perplexity(model.eval(), ids, **options) == pytest.approx(expected, rel=1e-5)


def test_llama_cpp_decodes_a_batch_as_each_row_alone() -> None:
    pytest.importorskip("llama_cpp")
    from benchmarks.llamacpp import llama_cpp_decoder
    from tformer.assets import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    prompts = [[504, 3575, 282, 4649, 314], [79, 100]]  # "The capital of France is", 2 ids
    batched = llama_cpp_decoder(gguf, prompts, max_new_tokens=4)(4)
    alone = [llama_cpp_decoder(gguf, [p], max_new_tokens=4)(4)[0] for p in prompts]
    assert batched.shape == (2, 4)
    assert torch.equal(batched, torch.stack(alone))


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks", "--quick", "--case", "gpt-train-small-fp32"]
    command += ["--rounds", "1", "--out", str(tmp_path / "quick")]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
    records = [json.loads(line) for line in (tmp_path / "quick.jsonl").read_text().splitlines()]
    machine = records[0]["machine"]  # every result names its CPU class
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["cpu_model"] and isinstance(machine["native_bf16"], bool)
    assert machine["amx"] == ("amx_tile" in Path("/proc/cpuinfo").read_text())
    assert {r.get("contender") for r in records[1:]} == {
        "tformer",
        "transformers-eager",
        "transformers-sdpa",
    }


@pytest.mark.slow
def test_quick_generation_cases_run_end_to_end(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks", "--quick", "--case", "generation-cache"]
    command += ["--rounds", "1", "--out", str(tmp_path / "quick")]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
    records = [json.loads(line) for line in (tmp_path / "quick.jsonl").read_text().splitlines()]
    ours, peer = records[1:]
    assert (ours["contender"], peer["contender"]) == ("tformer", "tformer-nocache")
    assert set(ours["ours_over_peer"]) == {"tformer-nocache"} and ours["peak_mib"] > 0


def test_onnxruntime_contenders_embed_as_we_do() -> None:
    """ONNX Runtime runs the same MiniLM: fp32 embeddings equal ours, int8 close to them (and
    our bf16 encoder closer)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from benchmarks.encoder import _cosines
    from tformer.assets import minilm_directory

    cosines = _cosines(minilm_directory(), CPU)
    assert cosines["onnxruntime-fp32"]["min_cosine_vs_tformer"] > 0.9999
    assert cosines["onnxruntime-int8"]["min_cosine_vs_tformer"] > 0.95
    assert cosines["tformer-bf16"]["min_cosine_vs_tformer"] > 0.99


def test_a_command_step_times_the_first_output_and_reports_the_peak_memory() -> None:
    from benchmarks.startup import CommandStep

    # Prints at once, then would take a minute to exit: the step stops at the first byte.
    script = "import time; print('x', flush=True); time.sleep(60)"
    step = CommandStep([sys.executable, "-c", script], dict(os.environ), warmup=1)
    started = time.perf_counter()
    step()
    step()
    assert time.perf_counter() - started < 60
    assert len(step.first_token_s) == 2 and 0 < max(step.first_token_s) < 30
    # MiB of a bare Python process: its own peak, not this process's (which holds torch)
    assert step.close() == step.peaks_mib[1] and 1 < step.close() < 100
    silent = CommandStep([sys.executable, "-c", "import sys; sys.exit(3)"], {})
    with pytest.raises(RuntimeError, match="printed nothing"):
        silent()


def test_peak_memory_gets_its_own_ratio_against_each_peer(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    case = Case(
        name="startup",
        contenders=[
            Contender("tformer", clock.step_taking(2.0)),
            Contender("peer", clock.step_taking(1.0)),
        ],
        work_per_step=1,
        unit="starts",
    )
    measured = run_case(case, rounds=1, steps_per_round=1, warmup=0, device=CPU)
    memory = {("startup", "tformer"): 300.0, ("startup", "peer"): 200.0}
    ours, _ = rows(measured, memory, [case], FACTS)
    assert ours["ours_over_peer"] == {"peer": pytest.approx(0.5)}  # twice as slow to start
    assert ours["peak_over_peer"] == {"peer": pytest.approx(1.5)}
    assert "| startup | tformer | 1.50x peer |" in markdown([ours], FACTS)


def test_a_training_run_step_times_a_whole_process_and_reads_its_loss_and_peak(tmp_path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[model]\narch = "decoder"\nd_model = 32\nn_heads = 2\nn_layers = 1\nd_ff = 64\n'
        'max_seq_len = 16\npositional = "learned"\n'
        f'[data]\ntask = "causal-lm"\npath = "{tmp_path / "text.txt"}"\ntokenizer = "char"\n'
        "[training]\nmax_steps = 3\nbatch_size = 4\nwarmup_steps = 1\neval_every = 3\n"
        'optimizer = "muon"\n'
    )
    (tmp_path / "text.txt").write_text("to be or not to be, that is the question\n" * 40)
    run = TrainingRun(str(recipe))
    run()
    assert len(run.wall_s) == len(run.val_loss) == len(run.train_s) == 1
    assert 0 < run.train_s[0] < run.wall_s[0]  # the loop is part of the process's time
    assert 0 < run.val_loss[0] < 10
    assert run.summary()["rounds_at_target"] == float(run.val_loss[0] <= 1.88)
    run.val_loss += [1.0, 9.0]  # two more rounds, one reaching the target and one not
    assert run.summary()["rounds_at_target"] == pytest.approx((1 + (run.val_loss[0] <= 1.88)) / 3)
    assert 50 < run.close() < 4000  # a Python process with torch: tens to hundreds of MiB
