"""T5 beyond the family tables: relative position buckets, sequences past max_distance,
cached decoding, the tokenizer.json of T5 checkpoints, translation and explain.

Import/export parity on padded batches and greedy/beam parity with `generate()` run in the
shared tables (test_pretrained_families.py, test_generation_parity.py); the references here
are `transformers` too, on the same random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import assert_close, randomise  # noqa: E402
from t5_models import VERSIONS, hf_t5  # noqa: E402
from tformer import CheckpointError, ModelConfig  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.errors import ConfigError  # noqa: E402
from tformer.modules.position import RelativeBuckets, relative_position_bucket  # noqa: E402

T5Attention = transformers.models.t5.modeling_t5.T5Attention
VOCAB = 61


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("buckets", "max_distance"), [(32, 128), (8, 12), (6, 20), (4, 3)])
def test_relative_buckets_equal_transformers(
    bidirectional: bool, buckets: int, max_distance: int
) -> None:
    distance = torch.arange(-300, 301)[None]  # both sides of max_distance, both directions
    ours = relative_position_bucket(
        distance, RelativeBuckets(1, buckets, max_distance, bidirectional=bidirectional)
    )
    theirs = T5Attention._relative_position_bucket(
        distance, bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance
    )
    assert ours.tolist() == theirs.tolist()


@pytest.fixture(params=VERSIONS)
def t5_pair(request: pytest.FixtureRequest, tmp_path: Path):
    """A random HF T5 of the version, and tformer's import of its save_pretrained directory."""
    torch.manual_seed(0)
    hf = randomise(hf_t5(request.param, VOCAB))
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = tformer.load(tmp_path / "hf")
    return hf, ours


def _right_padded(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (len(lengths), width))
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def test_long_padded_batch_matches_transformers_past_max_distance(t5_pair) -> None:
    """40-token sources and 30-token targets: distances far beyond max_distance=12 share
    the last buckets, in the encoder (both ways) and the decoder (backwards)."""
    hf, ours = t5_pair
    ids, mask = _right_padded([40, 23], 40)
    target, target_mask = _right_padded([30, 17], 30)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=target,
                    decoder_attention_mask=target_mask)  # fmt: skip
        mine = ours(ids, target, attention_mask=mask, decoder_attention_mask=target_mask)
    assert_close(
        {"hidden": mine.encoder_last_hidden_state, "logits": None},
        {"hidden": theirs.encoder_last_hidden_state, "logits": None},
        mask,
    )
    assert_close({"hidden": None, "logits": mine.logits},
                  {"hidden": None, "logits": theirs.logits}, target_mask)  # fmt: skip


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_cached_decoding_logits_match_transformers_full_pass(t5_pair, fixed_capacity) -> None:
    """Teacher-forced one token at a time through the KV cache (growing, or fixed-capacity
    as compiled decoding uses): each step's query sits at the cache's length, so its biases
    equal those of transformers' uncached pass over the whole target."""
    hf, ours = t5_pair
    ids, mask = _right_padded([11, 6], 11)
    target, _ = _right_padded([20, 20], 20)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=target).logits
        memory = ours.encode(ids, mask)
        cache, steps = ours.new_cache(), []
        for t in range(target.shape[1]):
            keys = None
            if fixed_capacity and t > 0:
                if cache.capacity is None:
                    cache.fix_capacity(target.shape[1])
                cache.reserve(1)
                keys = torch.ones(2, target.shape[1], dtype=torch.long)
            out = ours.decode(target[:, t : t + 1], memory, attention_mask=mask,
                              decoder_attention_mask=keys, cache=cache)  # fmt: skip
            steps.append(out.logits)
    assert_close({"hidden": None, "logits": torch.cat(steps, dim=1)},
                  {"hidden": None, "logits": theirs}, torch.ones(2, 20))  # fmt: skip


# ---- a T5 directory with its tokenizer, as the Hub ships them ---------------------------------
CORPUS = [
    "translate English to German: the house is small",
    "translate English to German: the cat sleeps in the house",
    "summarize: the quick brown fox jumps over the lazy dog",
    "das Haus ist klein und die Katze schläft",
]


def _t5_tokenizer(directory: Path) -> None:
    """A SentencePiece-Unigram tokenizer.json like T5's (pad 0, </s> 1, unk 2; runs of spaces
    split as one, "▁" before every word; "</s>" appended to every text) with the
    tokenizer_config.json T5 ships."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace("▁", prepend_scheme="always")]
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
        show_progress=False,
    )  # fmt: skip
    backend.train_from_iterator(CORPUS * 4, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": "<pad>", "extra_ids": 0}  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def t5_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Flan-T5-shaped (v1.1) checkpoint with its tokenizer files."""
    directory = tmp_path_factory.mktemp("flan-t5")
    _t5_tokenizer(directory)
    vocab = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(0)
    hf_t5("1.1", len(vocab), init_factor=2.0).save_pretrained(directory)
    return directory


SOURCES = ["translate English to German: the cat is small", "summarize: the lazy dog sleeps"]


def _transformers_translations(directory: Path, lines: list[str], **options) -> list[str]:
    """Each line translated alone by transformers' generate (no padding to get right)."""
    hf = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    outputs = []
    for line in lines:
        ids = tokenizer(line, return_tensors="pt").input_ids
        with torch.no_grad():
            out = hf.generate(ids, do_sample=False, length_penalty=1.0, early_stopping=False,
                              **options)  # fmt: skip
        outputs.append(tokenizer.decode(out[0], skip_special_tokens=True))
    return outputs


def test_t5_tokenizer_json_encodes_and_decodes_as_transformers(t5_directory: Path) -> None:
    _, tokenizer = tformer.load(t5_directory)
    assert tokenizer is not None
    reference = transformers.AutoTokenizer.from_pretrained(t5_directory)
    for text in [*SOURCES, "unseen wörds  and  spaces"]:
        ids = tokenizer.encode(text)
        assert ids == reference(text).input_ids and ids[-1] == 1  # </s> appended
        assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_translate_command_prints_transformers_greedy_translations(
    t5_directory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(SOURCES) + "\n")
    args = ["translate", str(t5_directory), str(source), "--beams", "1", "--max-new-tokens", "8"]
    assert main(args) == 0
    expected = _transformers_translations(t5_directory, SOURCES, num_beams=1, max_new_tokens=8)
    assert capsys.readouterr().out.split("\n")[:-1] == expected


def test_explain_command_reports_on_a_t5_model(t5_directory: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    args = ["explain", str(t5_directory), "--text", SOURCES[0], "--out", str(out)]
    assert main(args) == 0
    assert "<canvas" in out.read_text()


# ---- what is refused ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"positional": "rotary", "relative_buckets": 16},
         r"relative_buckets=16 has no effect with positional='rotary'"),
        ({"positional": "relative", "relative_buckets": 2}, r"relative_buckets=2 must be >= 4"),
        ({"positional": "relative", "relative_buckets": 32, "relative_max_distance": 16},
         r"relative_max_distance=16 must exceed relative_buckets // 2 = 16"),
        ({"arch": "encoder", "scale_output": True},
         r"scale_output=True rescales the input of an LM output projection; head='masked-lm'"),
    ],
)  # fmt: skip
def test_relative_and_output_scale_settings_are_validated(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)


def test_unsupported_feed_forward_is_refused(tmp_path: Path) -> None:
    hf_t5("1.0", VOCAB).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "feed_forward_proj": "gated-silu"}))
    with pytest.raises(
        CheckpointError, match=r"activation 'gated-silu' is not supported for t5; supported: relu"
    ):
        tformer.load(tmp_path)
