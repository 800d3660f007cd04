"""The `srft` command line: thin wrappers that parse options, call one stage function, and print.

The commands, in pipeline order (one module per group):
    read     ingest                         srft.cli.read
    label    annotate, critic-eval, view,   srft.cli.label
             labels export
    weigh    build, audit                   srft.cli.dataset
    train    train, models prepare|init     srft.cli.train
    compare  compare                        srft.cli.compare
    all      run, lab                       srft.cli.pipeline

Convention (every command): `--json` prints exactly one JSON object on stdout, with tables and progress on
stderr; exit status 0 only on full success, 1 when something failed while working, 2 for bad input. Commands
raise, they never catch: `srft.cli.common.SrftGroup` turns every error into one `error:` line (and the JSON
object), and `--debug` shows the traceback. Heavy imports (torch, transformers, datasets) happen inside the
commands, so `srft --help` stays fast. Adding an option is one parameter in the command's function. A command's
body builds the stage's config, runs the stage, prints the stage's own summary and ends with `common.finish` (the
JSON object, and exit 1 when the stage's verdict is a failure).
"""

from __future__ import annotations

import typer

import srft
from srft.cli import compare, dataset, label, pipeline, read, train
from srft.cli.common import SrftGroup

app = typer.Typer(cls=SrftGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Step Rejection Fine-Tuning: train agents on every trajectory, with no loss on mistake steps.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srft {srft.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
         debug: bool = typer.Option(False, "--debug", help="On an error, show the traceback (accepted after any "
                                    "command too; or set SRFT_DEBUG=1).")) -> None:
    """srft: read -> label -> weigh -> build -> train -> compare."""


labels_app = typer.Typer(no_args_is_help=True, help="Human step labels (the `srft view` database).")
models_app = typer.Typer(no_args_is_help=True, help="Student models: convert SmolLM2, build tiny random ones.")

for group, name, command in (
        (app, "ingest", read.ingest),
        (app, "annotate", label.annotate), (app, "critic-eval", label.critic_eval), (app, "view", label.view),
        (labels_app, "export", label.labels_export),
        (app, "build", dataset.build), (app, "audit", dataset.audit),
        (app, "train", train.train), (models_app, "prepare", train.models_prepare),
        (models_app, "init", train.models_init),
        (app, "compare", compare.compare),
        (app, "run", pipeline.run), (app, "lab", pipeline.lab)):
    group.command(name)(command)
app.add_typer(labels_app, name="labels")
app.add_typer(models_app, name="models")
