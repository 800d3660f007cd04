"""Shared by the run_<consumer>.py scripts (each runs in its consumer's own venv; nothing here imports srft).

A job file is {"cases": [{"name", "export", "model", "other_model"}]}: an srft export directory, the model
directory whose tokenizer built it, and a model with another tokenizer. The output file is
{"versions": {package: version}, "cases": {name: {"rows": [{"input_ids", "trained"}], "checks": {...}} or
{"error": "..."}}}: per sample the ids the consumer trains on and 1 where its loss counts the token, in the
consumer's order; each check is null when the setting did not fail, else "ExceptionType: message".
"""

import json
import traceback
from pathlib import Path


def failure(fn) -> str | None:
    """Run a setting that must fail: its error as one line, or None when it ran."""
    try:
        fn()
    except Exception as exc:  # the point is to record whatever the consumer raised
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    return None


def run_cases(job_path: str, out_path: str, case, versions: dict) -> None:
    job = json.loads(Path(job_path).read_text())
    result = {"versions": versions, "cases": {}}
    for spec in job["cases"]:
        try:
            result["cases"][spec["name"]] = case(spec)
        except Exception:  # one broken case is reported, the others still run
            result["cases"][spec["name"]] = {"error": traceback.format_exc()[-3000:]}
    Path(out_path).write_text(json.dumps(result))
