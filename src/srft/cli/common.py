"""What every command shares: the `--json` option and the one failure path.

Commands do not catch exceptions. `SrftGroup.main` wraps the whole invocation, so a usage error from the parser,
a bad input found by a stage and an unexpected crash all end the same way: one line `error: ...` on stderr,
exactly one JSON object `{"error": ..., ["problems": [...]]}` on stdout under `--json`, and exit 2 for bad input
(usage errors, ValueError and its subclasses, pydantic errors, unreadable files, unknown registry names) or 1 for
a failure found while working. `--debug`, anywhere on the line, shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout (tables and progress go to stderr).")

# Exit codes: 2 = the input is wrong (fix it and run again), 1 = something failed while working.
BAD_INPUT, FAILED = 2, 1


class SrftGroup(TyperGroup):
    """The top-level command group: runs the command, turns any exception into the failure contract."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        # `--debug` works after any command without each command declaring it: it is taken out before parsing.
        debug = "--debug" in argv or os.environ.get("SRFT_DEBUG", "") not in ("", "0")
        argv = [a for a in argv if a != "--debug"]
        from srft.console import reserve_stdout

        try:
            with reserve_stdout() if "--json" in argv else contextlib.nullcontext():
                code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:  # Ctrl-C: still one error line, and the JSON object under --json
            code = report_failure(RuntimeError("interrupted"), json_mode="--json" in argv)
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `srft models`: the help, as click prints it
                exc.show()
                return self._exit(exc.exit_code, standalone_mode)
            if debug and not isinstance(exc, typer.TyperException):
                raise
            code = report_failure(exc, json_mode="--json" in argv, flags=self.flags_of(argv))
        return self._exit(code, standalone_mode)

    @staticmethod
    def _exit(code: Any, standalone_mode: bool) -> Any:
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def flags_of(self, argv: list[str]) -> set[str]:
        """The long options of the command named on the line (so a config field can be reported as its flag)."""
        command: Any = self
        for token in argv:
            sub = getattr(command, "commands", {}).get(token)
            if sub is None:
                break
            command = sub
        return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def report_failure(exc: BaseException, json_mode: bool, flags: set[str] | frozenset = frozenset()) -> int:
    """Print the failure (stderr line, JSON object under --json) and return the exit code."""
    from srft.console import emit_json, print_error

    code, message, problems = describe(exc)
    if problems is not None:
        renamed = [_as_flag(p, flags) for p in problems]
        message = "; ".join(renamed) if message == "; ".join(problems) else message
        problems = renamed
    if json_mode:
        emit_json({"error": message, **({} if problems is None else {"problems": problems})})
    print_error(message)
    return code


def describe(exc: BaseException) -> tuple[int, str, list[str] | None]:
    """(exit code, one-line message, the problem lines when there are several) for any exception."""
    from pydantic import ValidationError

    from srft.config import validation_problems
    from srft.registry import RegistryError

    if isinstance(exc, typer.TyperException):  # usage errors of the (typer-vendored) click parser
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return exc.exit_code, one_line(exc.format_message()) + hint, None
    if isinstance(exc, ValidationError):
        problems = validation_problems(exc)
        return BAD_INPUT, "; ".join(problems), problems
    problems = list(exc.problems) if isinstance(getattr(exc, "problems", None), list) else None
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror or exc}"
    else:
        message = one_line(str(exc)) or type(exc).__name__
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code, message, problems
    if isinstance(exc, ValueError | OSError | RegistryError) or type(exc).__module__.startswith("yaml"):
        return BAD_INPUT, message, problems
    if isinstance(exc, RuntimeError):
        return FAILED, message, problems
    return FAILED, f"internal error: {type(exc).__name__}: {message} (run again with --debug for the traceback)", \
        problems


def _as_flag(problem: str, flags: set[str] | frozenset) -> str:
    """'n_boot: Input should be ...' -> '--n-boot: Input should be ...' when --n-boot is the command's flag."""
    field, sep, rest = problem.partition(": ")
    flag = "--" + field.replace("_", "-")
    return f"{flag}: {rest}" if sep and flag in flags else problem


def one_line(text: str) -> str:
    """'cannot build:\\n  a\\n  b' -> 'cannot build: a; b' (stderr gets one line, JSON the same text)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    head, rest = lines[0], lines[1:]
    return f"{head} {'; '.join(rest)}" if head.endswith(":") else "; ".join(lines)


def finish(json_out: bool, payload: dict[str, Any], ok: bool = True) -> None:
    """Close a command: its one JSON object under --json, then exit 1 when the stage's verdict is a failure."""
    if json_out:
        from srft.console import emit_json

        emit_json(payload)
    if not ok:
        raise typer.Exit(FAILED)


def csv_list(text: str | None) -> tuple[str, ...]:
    """'mistake, unnecessary' -> ('mistake', 'unnecessary')."""
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())
