"""The library's user-error types: what was given to tformer cannot be used.

Raised for bad input and bad configuration only -- a wrong path, a file that is not what it
claims, a config value of the wrong type, an option that does not apply. The `tformer`
command prints these as one `tformer: error:` line; any other exception is a bug and keeps its
traceback. Each subclass also derives from the built-in type a Python caller would expect
(`ValueError`, `FileNotFoundError`), so `except ValueError` around library calls still works.
"""

from __future__ import annotations


class TformerError(Exception):
    """Base of every error that reports a mistake in the user's input, not a bug."""


class ConfigError(TformerError, ValueError):
    """A configuration value (ModelConfig, GenerationConfig, a recipe table) is invalid."""


class InputError(TformerError, ValueError):
    """An argument or an input (text, ids, options) cannot be used as given."""


class MissingFileError(TformerError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class CheckpointError(TformerError, ValueError):
    """A checkpoint is missing, corrupted or does not fit the model."""
