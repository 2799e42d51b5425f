"""Fine-tuning through a recipe: `[lora]` is validated like the other tables, and
`tformer train configs/sft-tiny-lora.toml` from a saved base trains the adapters alone and
writes them in PEFT's format next to the run's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tformer
from tformer.adapters import LoraConfig, load_peft_adapters
from tformer.checkpoint import ADAPTERS, latest_checkpoint, read_weights
from tformer.cli import main
from tformer.config import ModelConfig
from tformer.data import build_task_data
from tformer.errors import ConfigError
from tformer.models import DecoderOnlyLM, TformerModel
from tformer.tokenizer import Tokenizer
from tformer.training import load_recipe, train_recipe
from tformer.training.evaluate_run import load_run_model

PROJECT = Path(__file__).resolve().parents[1]
RECIPE = PROJECT / "configs" / "sft-tiny-lora.toml"
FEW_STEPS = [
    "--training.max_steps=3",
    "--training.eval_every=3",
    "--training.eval_batches=1",
    "--training.warmup_steps=1",
    "--training.progress=false",
]


def test_the_lora_table_becomes_a_lora_config() -> None:
    recipe = load_recipe(RECIPE, ["--lora.rank", "4"])
    assert recipe.lora_config() == LoraConfig(
        targets="all-linear", rank=4, alpha=16.0, dropout=0.05
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--lora.rnak=4", r"\[lora\]: unknown key\(s\) rnak; known: alpha, base_dtype, dropout"),
        ('--lora.rank="big"', r"\[lora\]: rank='big' must be an integer"),
        ("--lora.alpha=0", r"\[lora\]: alpha=0 must be > 0"),
    ],
)
def test_a_bad_lora_table_is_a_config_error_naming_the_key(override, message, tmp_path) -> None:
    with pytest.raises(ConfigError, match=message):
        train_recipe(load_recipe(RECIPE, [override]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_bare_dropout_override_means_the_lora_one_only_where_there_is_a_lora_table() -> None:
    with pytest.raises(ConfigError, match="found in model and lora"):
        load_recipe(RECIPE, ["--dropout", "0.1"])
    plain = load_recipe(PROJECT / "configs" / "copy-task.toml", ["--dropout", "0.1"])
    assert plain.model["dropout"] == 0.1 and plain.lora is None
    assert "[lora]" not in plain.to_toml()


def save_base(directory: Path, **data_changes: object) -> Path:
    """A pretrained stand-in: the recipe's model with its data's tokenizer (`data_changes`
    to the [data] table), saved as a tformer checkpoint (fresh weights from another seed
    than the run's)."""
    recipe = load_recipe(RECIPE)
    table = {**recipe.data, **data_changes}
    data = build_task_data(table, directory, [PROJECT], recipe.model["max_seq_len"])
    config = ModelConfig.from_dict({**recipe.model, **data.model_fields})
    torch.manual_seed(7)
    DecoderOnlyLM(config).save_pretrained(directory / "base", data.tokenizer)
    return directory / "base"


def test_a_lora_run_merges_into_a_gguf_file_that_loads_as_the_runs_model(tmp_path) -> None:
    """`convert RUN OUT --merge-lora --to gguf` (float32: exact); GGUF files hold byte-level
    BPE tokenizers, so the base has one here."""
    pytest.importorskip("gguf")
    base = save_base(tmp_path, tokenizer="bpe", vocab_size=300)
    run = tmp_path / "run"
    args = ["train", "--out", str(run), str(RECIPE), *FEW_STEPS]
    assert main([*args, f"--model.init_from={base}", f"--data.tokenizer={base}"]) == 0
    gguf_file = tmp_path / "merged.gguf"
    args = ["convert", str(run), str(gguf_file), "--merge-lora", "--to", "gguf", "--type", "f32"]
    assert main(args) == 0
    trained = load_run_model(latest_checkpoint(run), load_recipe(run / "recipe.toml"))
    from_gguf, tokenizer = tformer.load(gguf_file)
    expected = Tokenizer.load(latest_checkpoint(run)).encode("2+2=4")
    assert tokenizer is not None and tokenizer.encode("2+2=4") == expected
    ids = torch.randint(3, 300, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(from_gguf(ids).logits, trained(ids).logits, atol=1e-5, rtol=1e-5)


def test_train_cli_fine_tunes_the_adapters_of_a_saved_base_only(tmp_path) -> None:
    base = save_base(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--out", str(run), str(RECIPE), *FEW_STEPS]
    assert main([*args, f"--model.init_from={base}", f"--data.tokenizer={base}"]) == 0

    adapter_config = json.loads((run / ADAPTERS / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["peft_type"] == "LORA"
    assert (run / ADAPTERS / "adapter_model.safetensors").is_file()

    before = dict(read_weights(base))
    after = dict(read_weights(latest_checkpoint(run)))
    adapter_names = {n for n in after if ".lora." in n}
    assert adapter_names and set(after) - adapter_names == set(before)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == set(), f"base tensors changed: {sorted(changed)}"
    assert all(after[n].abs().max() > 0 for n in adapter_names if n.endswith(".B"))  # B starts 0

    # the PEFT files hold the trained adapters: base + them computes what the run's model does
    peft_model = TformerModel.from_pretrained(base)
    load_peft_adapters(peft_model, run / ADAPTERS)
    trained = load_run_model(latest_checkpoint(run), load_recipe(run / "recipe.toml"))
    ids = torch.randint(3, peft_model.config.vocab_size, (2, 12))
    torch.testing.assert_close(peft_model.eval()(ids).logits, trained(ids).logits)

    # merged into a plain Hugging Face directory that transformers runs as the run's model
    transformers = pytest.importorskip("transformers")
    merged = tmp_path / "merged-hf"
    assert main(["convert", str(run), str(merged), "--merge-lora", "--to", "hf"]) == 0
    reference = transformers.AutoModelForCausalLM.from_pretrained(merged).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, trained(ids).logits, atol=1e-5, rtol=1e-5)
    assert (merged / "tokenizer.json").is_file()
    assert main(["convert", str(base), str(tmp_path / "x"), "--merge-lora"]) == 2  # not a run
