"""Hugging Face import/export parity: random-initialised `transformers` models of every
supported family, saved with save_pretrained, loaded by tformer, compared on padded batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import TOL, assert_close, randomise, run_hf, run_tformer  # noqa: E402
from t5_models import hf_t5, hf_t5_encoder  # noqa: E402
from tformer import CheckpointError, ModelConfig, build_model  # noqa: E402
from tformer.generation import generate  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402
from tformer.pretrained.families import family_for  # noqa: E402

VOCAB = 61


def _model(cls_name: str, config: transformers.PretrainedConfig) -> torch.nn.Module:
    """`cls_name` of `config`; question answering has two outputs (start, end), which
    transformers takes from num_labels."""
    if cls_name.endswith("ForQuestionAnswering"):
        config.num_labels = 2
    return getattr(transformers, cls_name)(config)


def _bert(cls_name: str) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, num_labels=3,
    )  # fmt: skip
    return _model(cls_name, config)


def _gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=40,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _llama(tie: bool = False) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _mistral(window: int | None = None) -> torch.nn.Module:
    config = transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, intermediate_size=48, max_position_embeddings=64,
        sliding_window=window, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.MistralForCausalLM(config)


def _llama_scaled(rope: dict) -> torch.nn.Module:
    """head_dim 16 at theta 1e4 with an original context of 32: one wavelength (about 20)
    falls in llama3's blended band, shorter ones are kept and longer ones stretched."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        head_dim=16, num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128,
        rope_parameters={"rope_theta": 1e4, **rope}, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


LLAMA3_ROPE = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}  # fmt: skip


def _qwen2(tie: bool) -> torch.nn.Module:
    """Qwen2.5's shape: q/k/v biases, tied embeddings in the small sizes; GQA ratio 1 or 4."""
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4 if tie else 1, intermediate_size=48, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
        tie_word_embeddings=tie, use_sliding_window=False, sliding_window=4096,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.Qwen2ForCausalLM(config)


def _qwen3(attention_bias: bool) -> torch.nn.Module:
    """head_dim 12 with hidden 32 and 4 heads (not hidden / heads); GQA ratio 2."""
    config = transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, intermediate_size=48, max_position_embeddings=64,
        attention_bias=attention_bias, tie_word_embeddings=not attention_bias,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.Qwen3ForCausalLM(config)


def _bart() -> torch.nn.Module:
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_position_embeddings=40,
    )  # fmt: skip
    model = transformers.BartForConditionalGeneration(config)
    model.final_logits_bias.normal_()  # a buffer, so _randomise would leave it at zero
    return model


def _roberta(cls_name: str, *, tie: bool = True, types: int = 1) -> torch.nn.Module:
    """RoBERTa's fairseq positions (pad 1: rows 0-1 precede position 0); one segment type as
    in roberta-base, or several; tied or untied MLM decoder."""
    config = transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=42, type_vocab_size=types,
        tie_word_embeddings=tie, num_labels=3,
    )  # fmt: skip
    return _model(cls_name, config)


def _xlm_roberta(cls_name: str) -> torch.nn.Module:
    """XLM-R with pad id 0 (position table offset 1) and 3 segment types: the offset follows
    pad_token_id, not a constant."""
    config = transformers.XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=24, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=40, max_position_embeddings=30, type_vocab_size=3, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, num_labels=5, layer_norm_eps=1e-5,
    )  # fmt: skip
    return _model(cls_name, config)


def _distilbert(cls_name: str, *, tie: bool = True, activation: str = "gelu") -> torch.nn.Module:
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=40,
        max_position_embeddings=40, activation=activation, tie_word_embeddings=tie, num_labels=3,
    )  # fmt: skip
    return _model(cls_name, config)


HF_MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "bert-mlm": lambda: _bert("BertForMaskedLM"),
    "bert-base": lambda: _bert("BertModel"),
    "bert-classify": lambda: _bert("BertForSequenceClassification"),
    "bert-tokens": lambda: _bert("BertForTokenClassification"),
    "bert-qa": lambda: _bert("BertForQuestionAnswering"),
    "gpt2": _gpt2,
    "llama-gqa": _llama,
    "llama-tied": lambda: _llama(tie=True),
    "mistral": _mistral,
    "mistral-window-4": lambda: _mistral(window=4),  # the batch's 9 tokens go past it
    "llama3-rope": lambda: _llama_scaled(LLAMA3_ROPE),
    "llama-linear-rope": lambda: _llama_scaled({"rope_type": "linear", "factor": 3.0}),
    "qwen2-untied-gqa4": lambda: _qwen2(tie=False),
    "qwen2.5-tied": lambda: _qwen2(tie=True),
    "qwen3": lambda: _qwen3(attention_bias=False),
    "qwen3-attention-bias": lambda: _qwen3(attention_bias=True),
    "bart": _bart,
    "roberta-mlm": lambda: _roberta("RobertaForMaskedLM"),
    "roberta-mlm-untied": lambda: _roberta("RobertaForMaskedLM", tie=False, types=2),
    "roberta-base": lambda: _roberta("RobertaModel"),
    "roberta-classify": lambda: _roberta("RobertaForSequenceClassification"),
    "roberta-tokens": lambda: _roberta("RobertaForTokenClassification"),
    "roberta-qa": lambda: _roberta("RobertaForQuestionAnswering"),
    "xlm-roberta-mlm": lambda: _xlm_roberta("XLMRobertaForMaskedLM"),
    "xlm-roberta-base": lambda: _xlm_roberta("XLMRobertaModel"),
    "xlm-roberta-classify": lambda: _xlm_roberta("XLMRobertaForSequenceClassification"),
    "xlm-roberta-tokens": lambda: _xlm_roberta("XLMRobertaForTokenClassification"),
    "xlm-roberta-qa": lambda: _xlm_roberta("XLMRobertaForQuestionAnswering"),
    "distilbert-mlm": lambda: _distilbert("DistilBertForMaskedLM"),
    "distilbert-mlm-untied-relu": lambda: _distilbert(
        "DistilBertForMaskedLM", tie=False, activation="relu"
    ),
    "distilbert-base": lambda: _distilbert("DistilBertModel"),
    "distilbert-classify": lambda: _distilbert("DistilBertForSequenceClassification"),
    "distilbert-tokens": lambda: _distilbert("DistilBertForTokenClassification"),
    "distilbert-qa": lambda: _distilbert("DistilBertForQuestionAnswering"),
    "t5-v1.0-tied-relu": lambda: hf_t5("1.0", VOCAB),
    "t5-v1.1-untied-gated-gelu": lambda: hf_t5("1.1", VOCAB),
    "t5-encoder-v1.1": lambda: hf_t5_encoder("1.1", VOCAB),
}


def _batch(pad_id: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded sequences (lengths 9 and 5); real ids >= 3."""
    ids = torch.randint(3, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    return ids.masked_fill(mask == 0, pad_id), mask


def _pad_id(hf_model: torch.nn.Module) -> int:
    """The model's own pad id: RoBERTa numbers positions by it (other families ignore it)."""
    pad = hf_model.config.pad_token_id
    return 1 if pad is None else pad


@pytest.fixture(params=sorted(HF_MODELS))
def hf_checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = randomise(HF_MODELS[request.param]())
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def test_imported_model_matches_transformers_on_padded_batch(hf_checkpoint) -> None:
    hf_model, directory = hf_checkpoint
    model, _ = tformer.load(directory)
    ids, mask = _batch(_pad_id(hf_model))
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)


def test_exported_model_loads_in_transformers_with_same_outputs(hf_checkpoint, tmp_path) -> None:
    hf_model, directory = hf_checkpoint
    model, _ = tformer.load(directory)
    save_hf_directory(model, tmp_path / "exported")
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    # the family it came from (XLM-R is written as RoBERTa: one record holds both), except
    # that a Mistral without a window computes what Llama computes and is written as Llama
    came_from = hf_model.config.model_type
    if came_from == "mistral" and hf_model.config.sliding_window is None:
        came_from = "llama"
    assert family_for(exported["model_type"]) is family_for(came_from)
    reloaded = type(hf_model).from_pretrained(tmp_path / "exported").eval()
    ids, mask = _batch(_pad_id(hf_model))
    assert_close(run_tformer(model, ids, mask), run_hf(reloaded, ids, mask), mask)


def test_explain_writes_a_report_for_every_imported_family(hf_checkpoint, tmp_path) -> None:
    """`tformer explain` on each Hugging Face directory of the table (ids as text: no
    tokenizer), one self-contained report with its heatmaps."""
    from tformer.cli import main

    _, directory = hf_checkpoint
    out = tmp_path / "report.html"
    assert main(["explain", str(directory), "--text", "5 9 3 17 8", "--out", str(out)]) == 0
    assert "<canvas" in out.read_text()


def test_native_llama_style_model_exports_to_transformers(tmp_path: Path) -> None:
    config = ModelConfig(
        arch="decoder", vocab_size=VOCAB, d_model=32, n_heads=4, n_kv_heads=1, n_layers=2,
        d_ff=40, positional="rotary", rope_theta=1e4, norm="rmsnorm", norm_position="pre",
        activation="swiglu", bias=False, tie_embeddings=False, dropout=0.0,
    )  # fmt: skip
    model = randomise(build_model(config))
    save_hf_directory(model, tmp_path / "hf")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(reference, ids, mask), mask)


@pytest.mark.parametrize("preset", ["tiny-decoder", "tiny-encoder", "llama-mini"])
def test_native_presets_export_to_transformers(tmp_path: Path, preset: str) -> None:
    model = randomise(build_model(ModelConfig.preset(preset, vocab_size=VOCAB)))
    save_hf_directory(model, tmp_path / "hf")
    family = json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"][0]
    reference = getattr(transformers, family).from_pretrained(tmp_path / "hf").eval()
    ids, mask = _batch()
    # the presets are up to 12x wider and 3x deeper than the test models: float32 round-off
    # accumulates to about 1e-5 on logits of magnitude 6
    assert_close(run_tformer(model, ids, mask), run_hf(reference, ids, mask), mask, tol=1e-4)


@pytest.mark.parametrize(
    ("change", "named"),
    [({"scale_embeddings": True}, "scale_embeddings=True"), ({"n_kv_heads": 2}, "n_kv_heads=2")],
)
def test_export_refuses_settings_the_family_cannot_express(
    tmp_path: Path, change: dict, named: str
) -> None:
    model = build_model(ModelConfig.preset("tiny-decoder", **change))
    with pytest.raises(ValueError, match=rf"gpt2: .*{named}"):
        save_hf_directory(model, tmp_path)


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    hf_model = randomise(_llama())
    hf_model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, _ = tformer.load(tmp_path)
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)


def _edit_weights(directory: Path, edit: Callable[[dict], None]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", {"format": "pt"})


def _edit_config(directory: Path, **changes: object) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.fixture
def gpt2_dir(tmp_path: Path) -> Path:
    _gpt2().save_pretrained(tmp_path)
    return tmp_path


def test_missing_tensor_is_named_with_its_expected_shape(gpt2_dir: Path) -> None:
    _edit_weights(gpt2_dir, lambda t: t.pop("transformer.h.1.attn.c_attn.weight"))
    with pytest.raises(
        CheckpointError, match=r"'transformer\.h\.1\.attn\.c_attn\.weight'.*\(32, 96\)"
    ):
        tformer.load(gpt2_dir)


def test_shape_mismatch_is_named_with_its_expected_shape(gpt2_dir: Path) -> None:
    def shrink(t: dict) -> None:
        t["transformer.h.0.mlp.c_fc.weight"] = t["transformer.h.0.mlp.c_fc.weight"][
            :, :100
        ].contiguous()

    _edit_weights(gpt2_dir, shrink)
    with pytest.raises(
        CheckpointError, match=r"c_fc\.weight' has shape \(32, 100\), expected shape \(32, 128\)"
    ):
        tformer.load(gpt2_dir)


def test_unknown_architecture_lists_supported_ones(gpt2_dir: Path) -> None:
    _edit_config(gpt2_dir, model_type="rwkv")
    with pytest.raises(ValueError, match="unknown architecture model_type='rwkv'; supported: bert"):
        tformer.load(gpt2_dir)


def test_unsupported_setting_is_refused_not_ignored(tmp_path: Path) -> None:
    _llama().save_pretrained(tmp_path)
    _edit_config(tmp_path, rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4})
    with pytest.raises(
        CheckpointError, match=r"rope scaling type 'yarn'.*supported: linear, llama3"
    ):
        tformer.load(tmp_path)


def test_bart_with_untied_embeddings_is_refused_not_read_from_shared(tmp_path: Path) -> None:
    """transformers >= 5 then computes with separate encoder and decoder embeddings and never
    reads `shared`; tformer's one matrix cannot hold them, so it says so."""
    config = _bart().config
    config.tie_word_embeddings = False
    model = transformers.BartForConditionalGeneration(config)
    with torch.no_grad():
        model.model.encoder.embed_tokens.weight.normal_()
    assert not torch.equal(model.model.encoder.embed_tokens.weight, model.model.shared.weight)
    model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"tie_word_embeddings=False; tformer supports only"):
        tformer.load(tmp_path)


@pytest.mark.parametrize("legacy", [False, True], ids=["rope_parameters", "rope_scaling"])
def test_llama3_rope_matches_transformers_beyond_the_original_context(
    tmp_path: Path, legacy: bool
) -> None:
    """Positions up to 47 on a model pre-trained for 32: every band of llama3's scaling is
    used. The older config.json spelling (top-level rope_scaling with "type") reads the same."""
    hf_model = randomise(_llama_scaled(LLAMA3_ROPE))
    hf_model.save_pretrained(tmp_path)
    if legacy:
        scaling = {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_type"}
        _edit_config(tmp_path, rope_parameters=None, rope_theta=1e4,
                     rope_scaling={"type": "llama3", **scaling})  # fmt: skip
    model, _ = tformer.load(tmp_path)
    assert model.config.rope_scaling == "llama3"
    ids = torch.randint(3, VOCAB, (2, 48))
    mask = torch.ones(2, 48, dtype=torch.long)
    mask[1, 40:] = 0
    ours, theirs = run_tformer(model, ids, mask), run_hf(hf_model, ids, mask)
    assert_close(ours, theirs, mask)
    unscaled = build_model(model.config.replace(rope_scaling=None, rope_factor=1.0,
                                                rope_original_max_seq_len=None))  # fmt: skip
    unscaled.load_state_dict(model.state_dict())
    far = run_tformer(unscaled.eval(), ids, mask)["logits"][:, 33:]
    assert (far - theirs["logits"][:, 33:]).abs().max() > 1e-2, "the scaling should matter"


def test_sliding_window_is_applied_in_decoding_as_transformers_applies_it(tmp_path) -> None:
    """A 3-token window over a 6-token prompt and 10 new tokens: greedy decoding with the
    KV cache is token-identical to transformers' (and differs from the unwindowed model)."""
    hf_model = randomise(_mistral(window=3))
    hf_model.save_pretrained(tmp_path)
    model, _ = tformer.load(tmp_path)
    assert model.config.sliding_window == 3
    prompt = torch.randint(3, VOCAB, (1, 6))
    ours = generate(model, prompt, max_new_tokens=10, eos_token_ids=())
    with torch.no_grad():
        theirs = hf_model.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)[:, 6:]  # fmt: skip
    assert ours.tolist() == theirs.tolist()
    unwindowed = build_model(model.config.replace(sliding_window=None))
    unwindowed.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(unwindowed.eval()(prompt).logits, model(prompt).logits)


def test_model_without_hf_family_says_why(tmp_path: Path) -> None:
    model = build_model(ModelConfig.preset("tiny-seq2seq"))
    with pytest.raises(ValueError, match="no Hugging Face family can hold this model"):
        save_hf_directory(model, tmp_path)


def test_roberta_positions_ignore_left_padding(tmp_path: Path) -> None:
    """RoBERTa numbers positions over non-pad ids (from pad_token_id + 1), so a left-padded
    row gives transformers' outputs and its own unpadded ones; no position_ids passed."""
    hf_model = randomise(_roberta("RobertaForMaskedLM"))
    hf_model.save_pretrained(tmp_path)
    model, _ = tformer.load(tmp_path)
    assert (model.config.position_offset, model.config.max_seq_len) == (2, 40)
    ids = torch.randint(3, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :4] = 0
    ids = ids.masked_fill(mask == 0, 1)
    ours, theirs = run_tformer(model, ids, mask), run_hf(hf_model, ids, mask)
    assert_close(ours, theirs, mask)
    alone = run_tformer(model, ids[1:, 4:], mask[1:, 4:])["logits"][0]
    assert (alone - ours["logits"][1, 4:]).abs().max() <= TOL


@pytest.mark.parametrize(
    ("make", "changes", "message"),
    [
        (lambda: _roberta("RobertaModel"), {"hidden_act": "relu"},
         r"activation 'relu' is not supported for roberta; supported: gelu"),
        (lambda: _roberta("RobertaModel"), {"position_embedding_type": "relative_key"},
         r"position_embedding_type='relative_key'; tformer supports only .*'absolute'"),
        (lambda: _roberta("RobertaModel"), {"max_position_embeddings": 2},
         r"max_position_embeddings=2 leaves no positions after the 2 rows before position 0"),
        (lambda: _xlm_roberta("XLMRobertaModel"), {"pad_token_id": 100},
         r"positions are numbered by pad_token_id, which has no token"),
        (lambda: _distilbert("DistilBertModel"), {"sinusoidal_pos_embds": True},
         r"sinusoidal_pos_embds=True; tformer supports only sinusoidal_pos_embds=False"),
        (lambda: _distilbert("DistilBertModel"), {"architectures": ["DistilBertForMultipleChoice"]},
         r"'DistilBertForMultipleChoice' is not supported; supported distilbert classes: "),
    ],
    ids=["roberta-act", "roberta-relative", "roberta-no-positions", "xlmr-foreign-pad",
         "distilbert-sinusoidal", "distilbert-multiple-choice"],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:.*outside the vocabulary")
def test_unsupported_encoder_settings_are_refused(
    tmp_path: Path, make: Callable, changes: dict, message: str
) -> None:
    make().save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        tformer.load(tmp_path)


def test_native_encoder_without_segments_exports_as_distilbert(tmp_path: Path) -> None:
    """BERT always has segment embeddings, so an encoder without them is DistilBERT (whose
    LayerNorm eps is 1e-12) or nothing, never a BERT that transformers could not run."""
    config = ModelConfig.preset("tiny-encoder", vocab_size=VOCAB, type_vocab_size=0)
    with pytest.raises(ValueError, match=r"bert: type_vocab_size=0 \(needs >= 1\)"):
        save_hf_directory(build_model(config), tmp_path / "refused")
    model = randomise(build_model(config.replace(norm_eps=1e-12)))
    save_hf_directory(model, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "distilbert"
    reference = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(reference, ids, mask), mask)


def test_embed_pipeline_on_roberta_matches_transformers_mean_pooling(tmp_path: Path) -> None:
    """`tformer.pipelines.embed` on a RoBERTa directory (with its tokenizer): padded batches
    pad with RoBERTa's id 1, which its positions skip, and the vectors equal transformers'
    last hidden states mean-pooled over real tokens and L2-normalised."""
    from tformer import Tokenizer
    from tformer.pipelines import embed

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n")
    specials = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
    tokenizer = Tokenizer.train_char([corpus], specials)
    assert tokenizer.token_id("pad") == 1
    config = transformers.RobertaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=48, max_position_embeddings=42,
        type_vocab_size=1,
    )  # fmt: skip
    torch.manual_seed(0)
    hf_model = randomise(transformers.RobertaModel(config))
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    model, loaded_tokenizer = tformer.load(tmp_path / "hf")
    assert loaded_tokenizer is not None
    sentences = ["the fox", "a lazy dog jumps over the brown fox", "dog"]
    vectors = embed(model, loaded_tokenizer, sentences, batch_size=2)
    expected = []
    for sentence in sentences:  # one at a time: no padding on the reference side
        ids = torch.tensor([tokenizer.encode(sentence)])
        with torch.no_grad():
            hidden = hf_model(input_ids=ids).last_hidden_state[0]  # (T, d_model)
        mean = hidden.mean(dim=0)
        expected.append(mean / mean.norm())
    assert (vectors - torch.stack(expected)).abs().max() <= TOL


def test_question_answering_loss_matches_transformers_and_ignores_padding(
    tmp_path: Path,
) -> None:
    """labels (B, 2) = (start, end) give transformers' (start loss + end loss) / 2 on an
    unpadded batch; padding a row (and its neighbour) changes nothing."""
    torch.manual_seed(0)
    hf_model = randomise(_bert("BertForQuestionAnswering"))
    hf_model.save_pretrained(tmp_path)
    model, _ = tformer.load(tmp_path)
    ids = torch.randint(3, VOCAB, (2, 6))
    starts, ends = torch.tensor([2, 1]), torch.tensor([5, 4])
    labels = torch.stack((starts, ends), dim=1)
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, start_positions=starts, end_positions=ends).loss
        ours = model(ids, labels=labels).loss
        padded = torch.cat((ids, torch.zeros(2, 3, dtype=torch.long)), dim=1)
        mask = (padded != 0).long()
        ours_padded = model(padded, attention_mask=mask, labels=labels).loss
    assert abs(ours.item() - theirs.item()) <= TOL
    assert abs(ours_padded.item() - ours.item()) <= TOL


def test_token_classifier_label_names_survive_import_and_export(tmp_path: Path) -> None:
    names = {0: "O", 1: "B-PER", 2: "I-PER"}
    hf_model = _bert("BertForTokenClassification")
    hf_model.config.id2label, hf_model.config.label2id = names, {v: k for k, v in names.items()}
    hf_model.save_pretrained(tmp_path / "hf")
    model, _ = tformer.load(tmp_path / "hf")
    assert model.config.labels == ("O", "B-PER", "I-PER")
    save_hf_directory(model, tmp_path / "exported")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "exported").id2label == names
