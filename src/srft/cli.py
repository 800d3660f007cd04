"""The `srft` command line: thin wrappers that parse options, call one stage function, and print.

Convention (every command): `--json` prints exactly one JSON object on stdout, with tables and progress on
stderr; exit status 0 only on full success. Heavy imports (torch, transformers, datasets) happen inside the
commands, so `srft --help` stays fast.
"""

from __future__ import annotations

import typer

import srft

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Step Rejection Fine-Tuning: train agents on every trajectory, with no loss on mistake steps.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srft {srft.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """srft: read -> label -> weigh -> build -> train -> compare."""


# Commands are added below, one block per command, each calling a stage function.
