"""What a step did, read from the canonical model only (tool calls, action text, observations), for any scaffold.

`step_facts(traj)` turns every step into `StepFacts`: its operations (one per tool call, or one shell command for
text scaffolds), a normalised identity key, the observation text, whether the scaffold rejected it, whether its
command failed at the shell/tool level, the file edits it made (with content, when the action says it) and the
edits it reverts. The heuristic critic's rules work on these facts.

Recognised without configuration: shell tools (bash, execute_bash, ...), `str_replace_editor`-style editors
(view/create/str_replace/insert/undo_edit), generic editing tools whose arguments name a path plus old/new text,
a line, or whole content (e.g. `edit_line(path, line, text)`), and in shell commands `sed -i 's/a/b/'`,
heredoc writes, `git checkout/restore/stash/reset --hard` and restoring a `.bak`/`.orig` copy.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from srft.model import Step, Trajectory

SHELL_TOOLS = {"bash", "execute_bash", "shell", "run_shell", "terminal", "run_command", "execute_command", "cmd",
               "sh", "run", "exec"}
READ_ONLY_PROGRAMS = {
    "ls", "cat", "head", "tail", "grep", "egrep", "fgrep", "rg", "ag", "find", "nl", "wc", "pwd", "echo", "tree",
    "file", "stat", "which", "less", "more", "diff", "cd", "true", "sort", "uniq", "cut", "awk", "printf", "du",
    "open", "goto", "scroll_up", "scroll_down", "search_file", "search_dir", "find_file", "filemap", "view",
}
READ_ONLY_GIT = {"diff", "status", "log", "show", "grep", "blame", "ls-files", "rev-parse"}
READ_ONLY_TOOL = re.compile(r"(^|_)(read|view|open|search|find|list|ls|cat|grep|goto|scroll|show|get|test|tests|"
                            r"pytest|check|lint|status|diff)(_|$)", re.I)
UNDO_TOOL = re.compile(r"(^|_)(undo|revert|rollback)(_|$)", re.I)
EDIT_TOOL = re.compile(r"(edit|write|replace|insert|create|patch|append|modify|update)", re.I)
PATH_KEYS = ("path", "file", "file_path", "filename", "filepath", "file_name")
OLD_KEYS, NEW_KEYS = ("old_str", "old", "old_text", "search", "find"), ("new_str", "new", "new_text", "replace")
LINE_KEYS = ("line", "line_number", "lineno", "line_no", "start_line", "insert_line")
TEXT_KEYS = ("text", "content", "new_line", "line_text", "code", "file_text", "new_content")

# The scaffold refused the action (format errors, unknown tools): rejection messages of mini-swe-agent,
# SWE-agent, OpenHands and generic tool runners.
REJECTED = re.compile(
    r"provide EXACTLY ONE action|^Format error|was not formatted correctly|contained syntax errors and was NOT "
    r"executed|(?i:not a valid (tool|function)|^unknown (tool|function)\b|^invalid (tool|function)( call)?\b|"
    r"could not parse (your|the) (action|tool call|response)|no (action|tool call) (found|was provided)|"
    r"^tool \S{1,60} (not found|does not exist))", re.M)
# Shell/tool-level failures (the command did nothing useful), matched at a line start so that source code
# printed by grep/cat does not trigger them. Program errors such as a Traceback are information, not failures.
FAILED = re.compile(
    r"^(\S*sh: (line \d+: )?)?\S.{0,120}: command not found$|^\S.{0,200}: No such file or directory$|"
    r"^\S*: cannot (access|open|stat) .{0,200}$|syntax error near unexpected token|"
    r"unexpected EOF while looking for matching|^\S+: (invalid|unrecognized) option|"
    r"^sed: -e expression|^fatal: |^error: pathspec|^ERROR:|^Error:|"
    r"did not appear verbatim|No replacement was performed|^Invalid `\w+` parameter|"
    r"^The path \S+ does not exist|can't open file .{0,200}\[Errno 2\]|^<exception>|timed out and has been killed",
    re.M)
EXIT_CODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>|\[Command finished with exit code (-?\d+)\]|"
                       r"\bexit(?:ed with)? code:? (-?\d+)|\"returncode\":\s*(-?\d+)", re.I)
# Line contents an observation shows: `path:12: text` (grep -n, search tools) and, for a step that read one file,
# numbered listings `12: text` / `    12\ttext` (cat -n, editor views). They tell what a line held before an edit.
GREP_LINE = re.compile(r"^(?P<path>[\w./-]+\.\w+):(?P<line>\d+):\s?(?P<text>.*)$", re.M)
NUMBERED_LINE = re.compile(r"^\s*(?P<line>\d+)(?::[ ]|\t)(?P<text>.*)$", re.M)
SUBMIT_TOOL = re.compile(r"(^|_)(submit|finish|done|complete)(_|$)", re.I)
SUBMIT_COMMAND = re.compile(r"COMPLETE_TASK_AND_SUBMIT|^\s*submit\s*$", re.M)
TEST_TOOL = re.compile(r"(^|_)(test|tests|run_tests|pytest)(_|$)", re.I)
TEST_COMMAND = re.compile(r"\b(pytest|py\.test|tox|nox|unittest|runtests\.py|manage\.py test|go test|cargo test|"
                          r"npm test|make test)\b")
TESTS_FAILED = re.compile(r"\b[1-9]\d* (failed|errors?)\b|^FAILED\b|^FAIL:|^ERROR:? test|\bfailures=[1-9]|"
                          r"\berrors=[1-9]|^Tests? failed", re.M)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1([^\n]*)\n(.*?)\n\2\s*$", re.S | re.M)
SED_SUB = re.compile(r"^s(.)(.*?)(?<!\\)\1(.*?)(?<!\\)\1[gIi0-9]*$", re.S)


@dataclass(frozen=True)
class Edit:
    """A file change. kind: replace (old -> new text), line (content at line `loc`), insert (at `loc`),
    write (whole file), create."""

    path: str
    kind: str
    old: str | None = None
    new: str | None = None
    loc: str | None = None


@dataclass(frozen=True)
class Revert:
    """A step that undoes earlier edits: those of `paths` (None = every file), or only the last one of them."""

    paths: tuple[str, ...] | None
    last_only: bool = False


@dataclass
class Op:
    tool: str  # 'bash' for a shell command, else the tool name
    args: dict[str, Any] | None  # None: arguments were not valid JSON
    command: str | None = None  # shell command text


@dataclass
class StepFacts:
    number: int
    final: bool
    ops: list[Op]
    key: str  # identity of the action (tool names + canonical args, or the normalised command)
    observation: str
    rejected: str | None = None  # why the scaffold refused it
    failed: str | None = None  # the shell/tool error line
    mutates: bool = False  # may change files or state (anything not known to be read-only)
    edits: list[Edit] = field(default_factory=list)
    reverts: list[Revert] = field(default_factory=list)
    program: str = ""  # first program / tool: "same approach" when a retry uses the same one
    lines_seen: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, line) -> text shown
    submits: bool = False  # ends the episode by submitting
    tests: bool | None = None  # ran the tests: True = they passed, False = failures reported, None = no test run


def norm_path(path: str) -> str:
    path = posixpath.normpath(path.strip().strip("'\""))
    return path[2:] if path.startswith("./") else path


def same_path(a: str, b: str) -> bool:
    """'/testbed/pkg/x.py' and 'pkg/x.py' name the same file (scaffolds mix absolute and relative paths)."""
    a, b = norm_path(a), norm_path(b)
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def _segments(command: str) -> list[list[str]]:
    """Shell command -> word lists per simple command (heredoc bodies removed; naive about quoting)."""
    command = HEREDOC.sub(lambda m: f"<< {m.group(2)}{m.group(3)}", command)
    out = []
    for part in re.split(r"&&|\|\||;|\||\n", command):
        try:
            words = shlex.split(part, comments=False)
        except ValueError:
            words = part.split()
        while words and (re.match(r"^\w+=", words[0]) or words[0] in {"sudo", "time", "env", "nohup"}):
            words = words[1:]
        if words and words[0] == "timeout" and len(words) > 2:
            words = words[2:]
        if words:
            out.append(words)
    return out


def _writes_file(command: str) -> bool:
    for m in re.finditer(r"(?<![0-9&])>>?\s*(\S+)", HEREDOC.sub("", command)):
        if m.group(1) not in {"/dev/null", "&1", "&2"} and not m.group(1).startswith("&"):
            return True
    return False


def _segment_read_only(words: list[str]) -> bool:
    prog = posixpath.basename(words[0])
    if prog == "git":
        return len(words) > 1 and words[1] in READ_ONLY_GIT
    if prog == "sed":
        return not any(w.startswith("-i") or w == "--in-place" for w in words[1:])
    if prog == "find":
        return not any(w in {"-delete", "-exec", "-execdir"} for w in words[1:])
    return prog in READ_ONLY_PROGRAMS


def _shell_changes(command: str) -> tuple[list[Edit], list[Revert]]:
    edits, reverts = [], []
    for m in HEREDOC.finditer(command):
        target = re.search(r">\s*(\S+)", m.group(3)) or re.search(r">\s*(\S+)", command[:m.start()].split("\n")[-1])
        if target:
            edits.append(Edit(norm_path(target.group(1)), "write", new=m.group(4)))
    for words in _segments(command):
        prog = posixpath.basename(words[0])
        if prog == "sed" and any(w.startswith("-i") for w in words[1:]):
            args = [w for w in words[1:] if not w.startswith("-")]
            if len(args) >= 2 and (sub := SED_SUB.match(args[0])):
                edits.extend(Edit(norm_path(p), "replace", old=sub.group(2), new=sub.group(3)) for p in args[1:])
        elif prog == "git" and len(words) > 1 and words[1] in {"checkout", "restore"}:
            paths = [w for w in words[2:] if not w.startswith("-")]
            if "." in paths or (words[1] == "checkout" and not paths):
                reverts.append(Revert(None))
            elif paths and ("--" in words or words[1] == "restore"):
                reverts.append(Revert(tuple(norm_path(p) for p in paths)))
        elif prog == "git" and len(words) > 1 and (words[1] == "stash" and words[2:3] in ([], ["push"])
                                                   or words[1] == "reset" and "--hard" in words):
            reverts.append(Revert(None))
        elif prog in {"cp", "mv"} and len(words) >= 3:
            src, dst = words[-2], words[-1]
            if re.sub(r"\.(bak|orig|backup|save)$", "", src) == dst and src != dst:
                reverts.append(Revert((norm_path(dst),)))
    return edits, reverts


def _arg(args: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((args[k] for k in keys if k in args), None)


def _tool_changes(name: str, args: dict[str, Any]) -> tuple[list[Edit], list[Revert], bool]:
    """(edits, reverts, read_only) of a non-shell tool call."""
    path, command = _arg(args, PATH_KEYS), args.get("command")
    if isinstance(command, str) and isinstance(path, str):  # str_replace_editor-style
        path = norm_path(path)
        if command == "view":
            return [], [], True
        if command == "undo_edit":
            return [], [Revert((path,), last_only=True)], False
        if command == "str_replace":
            return [Edit(path, "replace", old=args.get("old_str"), new=args.get("new_str"))], [], False
        if command == "insert":
            return [Edit(path, "insert", new=args.get("new_str"), loc=str(args.get("insert_line")))], [], False
        if command == "create":
            return [Edit(path, "create", new=args.get("file_text"))], [], False
    if UNDO_TOOL.search(name):  # e.g. the lab's undo(path): the last edit of that file (or of any file)
        return [], [Revert((norm_path(path),) if isinstance(path, str) else None, last_only=True)], False
    if READ_ONLY_TOOL.search(name) and not EDIT_TOOL.search(name):
        return [], [], True
    if not isinstance(path, str):
        return [], [], False
    path = norm_path(path)
    old, new, line, text = (_arg(args, OLD_KEYS), _arg(args, NEW_KEYS), _arg(args, LINE_KEYS),
                            _arg(args, TEXT_KEYS))
    if isinstance(old, str) and isinstance(new, str):
        return [Edit(path, "replace", old=old, new=new)], [], False
    if line is not None:
        return [Edit(path, "line", new=None if text is None else str(text), loc=str(line))], [], False
    if isinstance(text, str) and EDIT_TOOL.search(name):
        return [Edit(path, "write", new=text)], [], False
    return [], [], False


def _ops(traj: Trajectory, step: Step) -> list[Op]:
    msg = traj.messages[step.message_index]
    if msg.tool_calls:
        ops = []
        for tc in msg.tool_calls:
            args = tc.arguments_dict()
            name = tc.function.name
            command = args.get("command") if args else None
            is_shell = isinstance(command, str) and (name in SHELL_TOOLS or not _arg(args, PATH_KEYS))
            ops.append(Op("bash" if is_shell else name, args, command if is_shell else None))
        return ops
    action = step.action.strip()
    return [Op("bash", {"command": action}, action)] if action else []


def _key(ops: list[Op]) -> str:
    parts = []
    for op in ops:
        if op.command is not None:
            parts.append("$ " + " ".join(op.command.split()))
        else:
            parts.append(f"{op.tool}({json.dumps(op.args, sort_keys=True)})")
    return "\n".join(parts)


def _program(ops: list[Op]) -> str:
    """The approach of a step, to tell a retry from a change of plan: the first real program of a shell command,
    or tool + sub-command + path for other tools (an editor tool does everything, its sub-command does not)."""
    for op in ops:
        if op.command is not None:
            words = [w for w in _segments(op.command) if w[0] != "cd"]
            if words:
                return posixpath.basename(words[0][0])
        elif op.args is not None:
            path = _arg(op.args, PATH_KEYS)
            sub = op.args.get("command")
            return ":".join(str(x) for x in (op.tool, sub if isinstance(sub, str) else "",
                                             norm_path(path) if isinstance(path, str) else ""))
        else:
            return op.tool
    return ""


def _lines_seen(ops: list[Op], observation: str) -> dict[tuple[str, str], str]:
    seen = {(norm_path(m["path"]), m["line"]): m["text"].strip() for m in GREP_LINE.finditer(observation)}
    paths = [norm_path(p) for op in ops if op.args and op.command is None
             and isinstance(p := _arg(op.args, PATH_KEYS), str)]
    if len(paths) == 1 and not seen:
        seen = {(paths[0], m["line"]): m["text"].strip() for m in NUMBERED_LINE.finditer(observation)}
    return seen


def _error_line(text: str, at: int) -> str:
    """The error as one short line: from the line holding the match, joined with the next one when that line is
    only a marker such as 'ERROR:'."""
    start = text.rfind("\n", 0, at) + 1
    lines = [ln.strip() for ln in text[start:].splitlines()[:2]]
    line = " ".join(lines) if len(lines[0]) < 16 else lines[0]
    line = re.sub(r"</?(exception|output|returncode)>", " ", line).strip()
    return line[:160]


def _exit_code(observation: str) -> int | None:
    m = EXIT_CODE.search(observation)
    return None if m is None else int(next(g for g in m.groups() if g is not None))


def _facts(traj: Trajectory, step: Step, tool_names: set[str] | None) -> StepFacts:
    ops = _ops(traj, step)
    observation = "\n".join(m.content for m in traj.observations(step))
    facts = StepFacts(step.number, step.final, ops, _key(ops), " ".join(observation.split()))
    facts.program = _program(ops)
    for op in ops:
        if op.args is None:
            facts.rejected = f"the arguments of tool call {op.tool!r} are not valid JSON"
        elif tool_names is not None and op.command is None and op.tool not in tool_names:
            facts.rejected = f"tool {op.tool!r} is not one of the scaffold's tools"
        elif op.command is not None:
            edits, reverts = _shell_changes(op.command)
            facts.edits += edits
            facts.reverts += reverts
            facts.mutates |= _writes_file(op.command) or not all(map(_segment_read_only, _segments(op.command)))
        else:
            edits, reverts, read_only = _tool_changes(op.tool, op.args)
            facts.edits += edits
            facts.reverts += reverts
            facts.mutates |= not read_only
    facts.lines_seen = _lines_seen(ops, "\n".join(m.content for m in traj.observations(step)))
    facts.submits = any(SUBMIT_TOOL.search(op.tool) if op.command is None else SUBMIT_COMMAND.search(op.command)
                        for op in ops)
    if any(TEST_TOOL.search(op.tool) if op.command is None else TEST_COMMAND.search(op.command) for op in ops):
        facts.tests = not TESTS_FAILED.search(observation)
    if not ops and not step.final:
        facts.rejected = "the step has no action"
    if m := REJECTED.search(observation):
        facts.rejected = facts.rejected or f"the scaffold rejected it: {m.group(0)!r}"
    code = _exit_code(observation)
    if facts.rejected is None and code != 0 and "Traceback (most recent call last)" not in observation:
        if m := FAILED.search(observation):
            facts.failed = _error_line(observation, m.start())
    return facts


def step_facts(traj: Trajectory) -> list[StepFacts]:
    """Facts for every non-demo step, in order."""
    tool_names = {t.get("function", t).get("name") for t in traj.tools} if traj.tools else None
    return [_facts(traj, s, tool_names) for s in traj.steps if not s.is_demo]
