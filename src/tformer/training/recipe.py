"""Recipes: a TOML file with `[model]`, `[data]` and `[training]` tables (and the optional
`[lora]` and `[eval]`), plus overrides.

`[model]` holds ModelConfig fields or `preset = "name"` (and fields that change it); the data
fills in what it determines (vocabulary size, special-token ids, number of labels). `[lora]`
holds LoraConfig fields: the model trains through adapters only (see docs/finetuning.md).
`[eval]` holds EvalConfig fields: the generation metrics `tformer evaluate` reports.
`--key value` overrides address `table.key` (`--training.lr 3e-4`) or a bare key that names
a field of exactly one table (`--max_steps 100`). See docs/training.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tformer.adapters.lora import LoraConfig
from tformer.config import ModelConfig, tables_to_toml
from tformer.data.task import parse_options, resolve_path
from tformer.errors import ConfigError, MissingFileError
from tformer.loading import load
from tformer.models import TformerModel
from tformer.training.config import TrainConfig
from tformer.training.generation_metrics import EvalConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

TABLES = ("model", "data", "training", "lora", "eval")
OPTIONAL_TABLES = {"lora": LoraConfig, "eval": EvalConfig}  # None when the recipe has none
RECIPE_FILE = "recipe.toml"


@dataclass
class Recipe:
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] | None = None  # None: no [lora] table (an empty one: the defaults)
    eval: dict[str, Any] | None = None  # None: no [eval] table
    source: Path | None = None  # the file it was read from (relative data paths start there)
    _pretrained: TformerModel | None = field(default=None, repr=False)

    def table(self, name: str) -> dict[str, Any]:
        """The table `name`; an absent [lora] or [eval] is created empty (an override such
        as `--lora.rank 8` turns adapters on)."""
        if name in OPTIONAL_TABLES and getattr(self, name) is None:
            setattr(self, name, {})
        return getattr(self, name)

    def to_toml(self) -> str:
        present = [name for name in TABLES if getattr(self, name) is not None]
        return tables_to_toml({name: getattr(self, name) for name in present})

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.training)

    def lora_config(self) -> LoraConfig | None:
        """The `[lora]` table as a LoraConfig (unknown keys and wrong types are ConfigErrors
        naming the table), or None when the recipe has none."""
        if self.lora is None:
            return None
        return parse_options(LoraConfig, self.lora, "[lora]")

    def eval_config(self) -> EvalConfig:
        """The `[eval]` table as an EvalConfig (the defaults, no metrics, without one)."""
        return parse_options(EvalConfig, self.eval or {}, "[eval]")

    def base_model_config(self) -> ModelConfig:
        """The `[model]` table alone (preset or pretrained config + fields), before the data
        fills in its values."""
        values = dict(self.model)
        preset = values.pop("preset", None)
        if values.pop("init_from", None) is not None:
            base = self.pretrained().config
        else:
            base = ModelConfig.preset(preset) if preset else ModelConfig()
        return ModelConfig.from_dict({**base.to_dict(), **values})

    def pretrained(self) -> TformerModel:
        """The model `[model] init_from` names (a tformer, Hugging Face or GGUF checkpoint;
        "pkg:NAME/path" for one inside an installed package), loaded once."""
        if self._pretrained is None:
            base_dirs = [self.source.parent.parent] if self.source else []
            self._pretrained, _ = load(resolve_path(self.model["init_from"], base_dirs))
        return self._pretrained

    def model_config(self, data_fields: dict[str, Any]) -> ModelConfig:
        """The model config with the values the data determines; an explicit `[model]` value
        that contradicts the data is an error rather than silently replaced."""
        for key, value in data_fields.items():
            if key in self.model and self.model[key] != value:
                raise ConfigError(
                    f"[model] {key} = {self.model[key]!r} but the data needs {key} = {value!r}; "
                    f"remove {key} from [model] (it is set from the data)"
                )
        return self.base_model_config().replace(**data_fields)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no recipe at {path}")
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}; use {', '.join(TABLES)}")
    recipe = Recipe(
        **{name: dict(tables.get(name, {})) for name in TABLES if name not in OPTIONAL_TABLES},
        **{name: dict(tables[name]) if name in tables else None for name in OPTIONAL_TABLES},
        source=path.resolve(),
    )
    apply_overrides(recipe, overrides)
    return recipe


def _parse_value(text: str) -> Any:
    """A TOML value (number, boolean, quoted string, array); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _known_keys(recipe: Recipe, name: str) -> set[str]:
    """The keys a bare `--key` may name in table `name`. [lora]'s and [eval]'s count only in
    a recipe that has the table, so `--dropout` keeps meaning the model's dropout elsewhere."""
    from dataclasses import fields

    if name == "model":
        return {f.name for f in fields(ModelConfig)} | {"preset", "init_from"}
    if name == "training":
        return {f.name for f in fields(TrainConfig)}
    if name in OPTIONAL_TABLES and getattr(recipe, name) is not None:
        return {f.name for f in fields(OPTIONAL_TABLES[name])}
    return set()  # [data] keys depend on the task: only dotted overrides reach them


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> None:
    """Apply `--table.key value` / `--key=value` pairs to the recipe's tables in place."""
    items = list(overrides)
    while items:
        flag = items.pop(0)
        if not flag.startswith("--"):
            raise ConfigError(f"override {flag!r} must look like --training.lr 3e-4")
        key, _, value = flag[2:].partition("=")
        if not value:
            if not items:
                raise ConfigError(f"override {flag} has no value")
            value = items.pop(0)
        table, _, name = key.rpartition(".")
        if not table:
            owners = [
                t
                for t in TABLES
                if name in _known_keys(recipe, t) or name in (getattr(recipe, t) or {})
            ]
            if len(owners) != 1:
                where = " and ".join(owners) or "no table"
                raise ConfigError(f"override --{name}: found in {where}; write --TABLE.{name}")
            table = owners[0]
        if table not in TABLES:
            raise ConfigError(f"override --{key}: unknown table {table!r}; use {', '.join(TABLES)}")
        recipe.table(table)[name.replace("-", "_")] = _parse_value(value)
