"""One module per `tformer` subcommand.

Each module defines `register(subparsers)`, which adds its parser and sets `handler` to a
function taking the parsed arguments. Handlers stay thin: they parse, call one library function
and print. `tformer.cli` finds the modules here, so adding a command never edits a shared list.
"""

MODEL_HELP = (
    "what tformer.load opens: a checkpoint directory, a `tformer train` run directory (its best "
    "checkpoint), a Hugging Face directory or a .gguf file"
)
