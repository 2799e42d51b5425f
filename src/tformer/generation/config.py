"""GenerationConfig: every decoding option, validated once before any tensor is touched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tformer.errors import ConfigError
from tformer.field_types import check_field_types

SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p")


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick new tokens.

    Sampling is one rule for the library and the command line: giving a sampling option
    (temperature, top_k, top_p, min_p) samples, unless `do_sample=False` says otherwise, which
    is then an error rather than a silently ignored option. `do_sample=True` alone samples from
    the model's distribution as it is. repetition_penalty applies to greedy, sampling and beam
    search alike (as in the CTRL paper, Keskar et al. 2019: logits of already-seen tokens are
    divided by the penalty when positive and multiplied when negative).

    prompt_lookup_tokens > 0 speculates without a draft model (see `generation/lookup.py`):
    up to that many tokens are proposed from an earlier occurrence of the sequence's last
    n-gram (n <= prompt_lookup_max_ngram) and checked in one forward pass. draft_tokens > 0
    speculates with a draft model (`generate(..., draft_model=...)`, `generation/draft.py`):
    the draft decodes that many tokens greedily, the model checks them in one pass. Both are
    exact for plain greedy decoding only, so they refuse sampling, beams and the repetition
    penalty, and one excludes the other.
    """

    max_new_tokens: int
    do_sample: bool | None = None  # None: sample iff a sampling option is given
    temperature: float | None = None  # None: 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] | None = None  # None: the model's eos_id; (): none
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    use_cache: bool = True
    static_cache: bool = False
    compile_step: bool = False  # torch.compile the decode step; implies static_cache
    prompt_lookup_tokens: int = 0  # speculate this many tokens per forward pass; 0: off
    prompt_lookup_max_ngram: int = 3  # the longest n-gram matched against earlier tokens
    draft_tokens: int = 0  # tokens the draft model proposes per forward pass; 0: no draft

    def __post_init__(self) -> None:
        check_field_types(self)
        given = [name for name in SAMPLING_OPTIONS if getattr(self, name) is not None]
        if self.do_sample is None:
            object.__setattr__(self, "do_sample", bool(given))
        elif not self.do_sample and given:
            raise ConfigError(
                f"{given[0]}={getattr(self, given[0])!r} only applies when sampling, but "
                "do_sample=False; drop the option for greedy decoding, or leave do_sample unset "
                "(a sampling option implies sampling)"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(
                f"temperature={self.temperature} must be > 0; for deterministic output use "
                "do_sample=False (greedy) instead of temperature 0"
            )
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} must be >= 1 (or None to disable)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1] (or None to disable)")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ConfigError(f"min_p={self.min_p} must be in [0, 1] (or None to disable)")
        if not self.repetition_penalty > 0:
            raise ConfigError(
                f"repetition_penalty={self.repetition_penalty} must be > 0 (1.0 disables it)"
            )
        if self.num_beams < 1:
            raise ConfigError(f"num_beams={self.num_beams} must be >= 1 (1 means no beam search)")
        if not 1 <= self.num_return_sequences <= self.num_beams:
            raise ConfigError(
                f"num_return_sequences={self.num_return_sequences} must be between 1 and "
                f"num_beams={self.num_beams}"
            )
        if self.num_beams > 1 and self.do_sample:
            raise ConfigError("beam search is deterministic: use num_beams=1 with do_sample=True")
        if self.early_stopping not in (True, False, "never"):
            raise ConfigError(
                f"early_stopping={self.early_stopping!r}; choose True, False or 'never'"
            )
        if (self.static_cache or self.compile_step) and not self.use_cache:
            raise ConfigError("static_cache and compile_step need use_cache=True")
        self._check_speculation()

    def _check_speculation(self) -> None:
        """Speculation accepts a proposed token only where plain greedy decoding picks it,
        so anything that picks differently (sampling, beams, a penalty over the tokens seen
        before each proposal) would make it inexact, and it rolls back a growing KV cache."""
        for name in ("prompt_lookup_tokens", "draft_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0 disables it)")
        if self.prompt_lookup_max_ngram < 1:
            raise ConfigError(
                f"prompt_lookup_max_ngram={self.prompt_lookup_max_ngram} must be >= 1"
            )
        speculating = [
            f"{name}={getattr(self, name)}"
            for name in ("prompt_lookup_tokens", "draft_tokens")
            if getattr(self, name)
        ]
        if len(speculating) > 1:
            raise ConfigError(f"{' and '.join(speculating)}: choose one way to speculate")
        if not speculating:
            return
        conflicts = {
            "do_sample=True": self.do_sample,
            f"num_beams={self.num_beams}": self.num_beams > 1,
            f"repetition_penalty={self.repetition_penalty}": self.repetition_penalty != 1.0,
            "use_cache=False": not self.use_cache,
            "static_cache=True": self.static_cache,
            "compile_step=True": self.compile_step,
        }
        for option, conflicting in conflicts.items():
            if conflicting:
                raise ConfigError(
                    f"{speculating[0]} is exact only for plain greedy decoding with a "
                    f"growing KV cache, not with {option}; drop one of them"
                )

    def replace(self, **changes: object) -> GenerationConfig:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
