"""`srft compare` on the real SWE-bench results in ../shared: inputs, denominators, errors, outputs, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from compare_support import cr2_reference, mcnemar_power, read_verified, repo_codes
from typer.testing import CliRunner

from srft.cli import app
from srft.compare.harness import CompareError, load_runs, run_compare

CSV = "derived/verified_mini-swe-agent_per_instance_resolved.csv"
IDS = "derived/verified_instance_ids.txt"
GEMINI = "20251118_mini-v1.15.0_gemini-3-pro-preview-20251118"
SONNET = "20250929_mini-v1.13.3_sonnet-4-5-20250929"
GPT5 = "20250807_mini-v1.7.0_gpt-5"
SBCLI = "sb-cli/swe-bench_verified__test__20251118_mini-v1.15.0_gemini-3-pro-preview-20251118.json"
OPENHANDS = "openhands/output.swebench_eval.md"
DEEPSEEK = {run: f"mini-swe-agent-pr816/deepseek__deepseek-chat.{run}.json"
            for run in ("deepseek_chat_dev", "deepseek_chat_dev_rerun", "deepseek_lite_dev_noparallel")}


@pytest.fixture(scope="module")
def r(results_dir):
    return lambda rel: str(results_dir / rel)


def _by_name(result):
    return {s["name"]: s for s in result["systems"]}


def test_rates_equal_leaderboard_counts(r, results_dir):
    result = run_compare(inputs=[r(CSV)], instances=r(IDS), baseline=GEMINI, n_boot=200)
    listed = json.loads((results_dir / "derived/verified_mini-swe-agent_systems.json").read_text())
    systems = _by_name(result)
    assert len(systems) == len(listed) == 24
    for entry in listed:
        s = systems[entry["folder"]]
        assert s["runs"][0]["n_resolved"] == entry["n_resolved_per_instance"]
        assert s["rate"] == entry["n_resolved_per_instance"] / 500
        assert s["runs"][0]["n_missing"] == 0 and s["ci"][0] <= s["rate"] <= s["ci"][1]
    assert result["instances"]["n"] == 500 and result["instances"]["from"] == r(IDS)
    assert len(result["comparisons"]) == 23 and {c["b"] for c in result["comparisons"]} == {GEMINI}


def test_pair_statistics_on_real_systems(r, results_dir):
    result = run_compare({"gemini": [f"{r(CSV)}:{GEMINI}"], "sonnet": [f"{r(CSV)}:{SONNET}"]}, n_boot=2_000)
    (pair,) = result["comparisons"]
    with open(results_dir / CSV) as fh:
        header = fh.readline().strip().split(",")
        table = np.array([[int(v) for v in line.strip().split(",")[1:]] for line in fh])
    a, b = table[:, header.index(GEMINI) - 1], table[:, header.index(SONNET) - 1]
    assert (pair["a"], pair["b"]) == ("gemini", "sonnet")
    assert pair["diff"] == pytest.approx((a.sum() - b.sum()) / 500, abs=1e-15)
    assert pair["a_only"] == int(((a == 1) & (b == 0)).sum()) and pair["b_only"] == int(((a == 0) & (b == 1)).sum())
    assert pair["both"] == int((a & b).sum()) and pair["neither"] == int(((a == 0) & (b == 0)).sum())
    assert pair["p_value"] == pytest.approx(scipy.stats.binomtest(pair["a_only"], pair["n_discordant"]).pvalue,
                                            rel=1e-12)
    assert pair["p_holm"] == pair["p_value"]  # one comparison: nothing to adjust
    assert pair["ci"][0] < pair["diff"] < pair["ci"][1]
    # the MDE of the exact test srft reports, at the observed discordance (scipy power sum in compare_support)
    assert pair["mde"]["method"] == "exact McNemar power" and pair["p_sign"] == pair["p_value"]
    assert mcnemar_power(500, pair["n_discordant"] / 500, pair["mde"]["value"]) == pytest.approx(0.8, abs=2e-4)
    assert pair["se_boot"] == pytest.approx(np.std(a - b, ddof=1) / np.sqrt(500), rel=0.06)
    assert pair["mde"]["by_runs"] is None  # one run each: within-run noise is not identifiable


def test_same_outcomes_from_two_formats_give_exact_zero(r):
    """The sb-cli report and the leaderboard column are the same 500 outcomes: difference 0, CI [0, 0]."""
    result = run_compare({"sbcli": [r(SBCLI)], "leaderboard": [f"{r(CSV)}:{GEMINI}"]}, instances=r(IDS),
                         cluster="repo", n_boot=1_000)
    (pair,) = result["comparisons"]
    assert (pair["diff"], pair["ci"], pair["a_only"], pair["b_only"]) == (0.0, [0.0, 0.0], 0, 0)
    assert pair["p_value"] == 1.0 and pair["both"] == 371
    sb, lb = (s["runs"][0] for s in result["systems"])
    assert sb["kind"] == "harness_summary" and lb["kind"] == "table"
    assert sb["outcomes_sha256"] == lb["outcomes_sha256"]
    assert result["instances"]["clusters"]["sizes"]["django/django"] == 231
    assert any("only 12 clusters" in w for w in result["warnings"])


def test_three_deepseek_runs_of_one_system(r):
    runs = [r(p) for p in DEEPSEEK.values()]
    one = run_compare({"deepseek": runs}, n_boot=2_000)
    two = run_compare({"deepseek": runs}, n_boot=2_000, two_level=True)
    (s,) = one["systems"]
    assert [run["n_resolved"] for run in s["runs"]] == [8, 8, 5]
    assert [run["rate"] for run in s["runs"]] == [8 / 23, 8 / 23, 5 / 23]
    assert [run["label"] for run in s["runs"]] == list(DEEPSEEK)
    assert s["rate"] == pytest.approx(21 / 69) and one["instances"]["n"] == 23
    assert s["run_spread"]["low"] == 5 / 23 and s["run_spread"]["high"] == 8 / 23
    assert s["run_spread"]["sd"] == pytest.approx(np.std([8 / 23, 8 / 23, 5 / 23], ddof=1))
    # 4 instances flip between runs (astroid-1333, -1196, -1866, sqlfluff-1733): within-run variance > 0.
    sets = [set(ids) for ids in (
        {"astroid-1196", "astroid-1866", "sqlfluff-1733"}, {"astroid-1196", "astroid-1333", "astroid-1866"}, set())]
    per_instance = [[k in s_ for s_ in sets] for k in ("astroid-1196", "astroid-1333", "astroid-1866", "sqlfluff-1733")]
    assert s["within_run_var"] == pytest.approx(sum(np.var(v, ddof=1) for v in per_instance) / 23)
    assert two["systems"][0]["se_boot"] > 1.03 * s["se_boot"]  # resampling runs adds the run-to-run spread


def test_runs_as_systems_pair_and_mde_projection(r):
    result = run_compare({"dev": [r(DEEPSEEK["deepseek_chat_dev"])],
                          "noparallel": [r(DEEPSEEK["deepseek_lite_dev_noparallel"])]}, n_boot=1_000)
    (pair,) = result["comparisons"]
    assert (pair["a_only"], pair["b_only"], pair["both"], pair["neither"]) == (3, 0, 5, 15)
    assert pair["p_value"] == pytest.approx(0.25)
    both = run_compare({"a": [r(p) for p in DEEPSEEK.values()], "b": [r(p) for p in DEEPSEEK.values()]},
                       n_boot=500)
    by_runs = both["comparisons"][0]["mde"]["by_runs"]
    assert list(by_runs) == ["1", "3", "5", "10"] and by_runs["1"] > by_runs["3"] > by_runs["10"] > 0


def test_missing_instances_count_unresolved_and_common_subset(r):
    result = run_compare({"openhands": [r(OPENHANDS)], "gemini": [f"{r(CSV)}:{GEMINI}"]}, instances=r(IDS),
                         n_boot=500)
    oh = _by_name(result)["openhands"]["runs"][0]
    assert oh["n_resolved"] == 26 and oh["rate"] == 26 / 500 and oh["n_missing"] == 450
    assert oh["status_counts"] == {"empty_patch": 1, "missing": 450, "resolved": 26, "unresolved": 23}
    assert len(oh["missing"]) == 450 and oh["missing"] == sorted(oh["missing"])
    assert any("openhands" in w and "450 of 500" in w for w in result["warnings"])
    common = run_compare({"openhands": [r(OPENHANDS)], "gemini": [f"{r(CSV)}:{GEMINI}"]}, common=True, n_boot=500)
    assert common["instances"]["n"] == 50 and common["instances"]["from"] == "common"
    gem = load_runs(f"{r(CSV)}:{GEMINI}")[0].outcomes
    oh_ids = load_runs(r(OPENHANDS))[0].outcomes
    assert _by_name(common)["gemini"]["runs"][0]["n_resolved"] == sum(gem[i].resolved for i in oh_ids)


def test_deterministic_json(r):
    args = dict(systems={"a": [r(p) for p in DEEPSEEK.values()], "b": [f"{r(CSV)}:{GEMINI}"]}, n_boot=500,
                two_level=True)
    one, two = run_compare(**args, seed=3), run_compare(**args, seed=3)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    assert run_compare(**args, seed=4)["comparisons"][0]["ci"] != one["comparisons"][0]["ci"]
    assert one["config"]["seed"] == 3 and one["config"]["n_boot"] == 500 and one["config"]["two_level"]


# -- bad inputs name the file ------------------------------------------------------------------------------

def test_unknown_format_names_the_file(tmp_path):
    bad = tmp_path / "mystery.json"
    bad.write_text('{"foo": 1}')
    with pytest.raises(CompareError, match=r"mystery\.json.*not a SWE-bench harness output"):
        run_compare({"x": [str(bad)]})
    with pytest.raises(CompareError, match=r"nothing_here.*no such file"):
        run_compare({"x": [str(tmp_path / "nothing_here.csv")]})


def test_duplicate_ids_in_a_run_name_the_file(tmp_path):
    table = tmp_path / "runs.csv"
    table.write_text("instance_id,r1\ndjango__django-1,1\nastropy__astropy-2,0\ndjango__django-1,0\n")
    with pytest.raises(CompareError, match=r"runs\.csv: duplicate instance id 'django__django-1' \(rows 2 and 4\)"):
        run_compare({"x": [str(table)]})
    jsonl = tmp_path / "runs.jsonl"
    jsonl.write_text('{"instance_id": "a__b-1", "resolved": true}\n{"instance_id": "a__b-1", "resolved": false}\n')
    with pytest.raises(CompareError, match=r"runs\.jsonl: duplicate instance id 'a__b-1'"):
        run_compare({"x": [str(jsonl)]})


def test_instance_outside_the_list_names_the_run_file(r, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("django__django-11099\n")
    with pytest.raises(CompareError, match=r"deepseek_chat_dev\.json: 23 instance\(s\) not in the instance list"):
        run_compare({"x": [r(DEEPSEEK["deepseek_chat_dev"])]}, instances=str(ids))


def test_bad_cells_columns_and_specs(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("instance_id\tr1\tr2\na__b-1\t1\tmaybe\na__b-2\t0\t\n")
    with pytest.raises(CompareError, match=r"t\.tsv: row 2, column 'r2': expected 0/1"):
        run_compare({"x": [str(table)]})
    assert run_compare({"x": [f"{table}:r1"]}, n_boot=100)["systems"][0]["rate"] == 0.5
    with pytest.raises(CompareError, match=r"t\.tsv: no column matches 'r9'"):
        run_compare({"x": [f"{table}:r9"]})
    with pytest.raises(CompareError, match="--baseline 'nope' is not a system"):
        run_compare({"x": [f"{table}:r1"], "y": [f"{table}:r1"]}, baseline="nope")
    noid = tmp_path / "noid.csv"
    noid.write_text("task,r1\na,1\n")
    with pytest.raises(CompareError, match=r"noid\.csv: no instance id column"):
        run_compare({"x": [str(noid)]})


def test_table_runs_blank_is_missing_and_glob_picks_runs(tmp_path):
    table = tmp_path / "seeds.csv"
    table.write_text("instance_id,seed0,seed1,seed2,note\nt1,1,1,0,x\nt2,0,,1,y\nt3,true,false,no,z\n")
    result = run_compare({"student": [f"{table}:seed*"]}, n_boot=200)
    (s,) = result["systems"]
    assert [run["label"] for run in s["runs"]] == ["seed0", "seed1", "seed2"]
    assert [run["n_resolved"] for run in s["runs"]] == [2, 1, 1]
    assert s["runs"][1]["missing"] == ["t2"] and s["rate"] == pytest.approx(4 / 9)


# -- the CLI -----------------------------------------------------------------------------------------------

def test_cli_json_markdown_plot(r, tmp_path):
    runner = CliRunner()
    png = tmp_path / "forest.png"
    args = ["compare", "--system", f"gemini={r(CSV)}:{GEMINI}", "--system", f"sonnet={r(CSV)}:{SONNET}",
            "--system", f"twice={r(SBCLI)},{r(CSV)}:{GEMINI}", "--baseline", "sonnet", "--instances", r(IDS),
            "--n-boot", "500"]
    res = runner.invoke(app, [*args, "--json", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)  # the whole of stdout is exactly one JSON object
    assert [s["name"] for s in result["systems"]] == ["gemini", "sonnet", "twice"]
    assert result["plot"] == str(png) and "Systems" in res.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(str(png))
    assert image.shape[0] > 100 and image.shape[1] > 400 and image.std() > 0.05  # a real drawing, not blank
    md = runner.invoke(app, [*args, "--markdown"])
    assert md.exit_code == 0
    lines = md.stdout.splitlines()
    assert lines[0].startswith("| system | runs | resolved % |") and "| gemini | 1 | 74.2 |" in md.stdout
    assert "| A - sonnet | diff pp | 95% CI | p | p Holm | A only | B only | both | neither | MDE pp |" in lines
    assert any(line.startswith("| gemini | +3.6 | [") for line in lines)
    assert "| twice | 2 | 74.2 | [" in md.stdout and "| 74.2, 74.2 | 0.0 (0.0) |" in md.stdout
    assert md.stdout.rstrip().endswith("._") and "500 instances (" in md.stdout


def test_cli_bad_input_exits_nonzero_naming_the_file(tmp_path):
    bad = tmp_path / "oops.json"
    bad.write_text("[1, 2]")
    res = CliRunner().invoke(app, ["compare", "--system", f"x={bad}", "--json"])
    assert res.exit_code == 2
    assert "oops.json" in json.loads(res.stdout)["error"] and "oops.json" in res.stderr
    res = CliRunner().invoke(app, ["compare", "--system", "no-equals-sign"])
    assert res.exit_code == 2 and "NAME=PATH" in res.output


def test_in_memory_runs_for_the_lab():
    """The lab compares trained students in-process: several seeds = several runs of one system."""
    from srft.compare.harness import Run, compare_runs

    tasks = [f"task-{i:02d}" for i in range(40)]
    student = [Run.from_resolved(f"seed{s}", {t: (i + s) % 3 != 0 for i, t in enumerate(tasks)}) for s in range(3)]
    base = [Run.from_resolved("seed0", {t: i % 2 == 0 for i, t in enumerate(tasks[:-1])})]
    result = compare_runs({"srft": student, "rft": base}, instances=tasks)
    srft, rft = result["systems"]
    assert srft["n_runs"] == 3 and [r["n_resolved"] for r in srft["runs"]] == [26, 27, 27]
    assert rft["runs"][0]["missing"] == ["task-39"] and rft["rate"] == 20 / 40
    (pair,) = result["comparisons"]
    assert pair["diff"] == pytest.approx(80 / 120 - 20 / 40)


def test_instances_from_a_table_use_its_id_column(r, tmp_path):
    ids = tmp_path / "ids.csv"
    dev = load_runs(r(DEEPSEEK["deepseek_chat_dev"]))[0].outcomes
    ids.write_text("instance_id,split\n" + "".join(f"{i},dev\n" for i in dev))
    result = run_compare({"x": [r(DEEPSEEK["deepseek_chat_dev"])]}, instances=str(ids), n_boot=100)
    assert result["instances"]["n"] == 23 and result["systems"][0]["runs"][0]["n_missing"] == 0


def test_cli_bad_option_names_the_option(r):
    res = CliRunner().invoke(app, ["compare", r(SBCLI), "--cluster", "folder", "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout)["error"] == "--cluster: Input should be 'none' or 'repo' (got 'folder')"


# -- inputs: BOM, trimmed ids, empty runs, restricting the instance set -------------------------------------

def test_bom_table_reads_like_the_original(r, results_dir, tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the id column is still found and the outcomes are the same."""
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (results_dir / CSV).read_bytes())
    plain = run_compare({"g": [f"{r(CSV)}:{GEMINI}"]}, n_boot=100)["systems"][0]["runs"][0]
    excel = run_compare({"g": [f"{bom}:{GEMINI}"]}, instances=r(IDS), n_boot=100)["systems"][0]["runs"][0]
    assert excel["outcomes_sha256"] == plain["outcomes_sha256"] and excel["n_resolved"] == 371
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbf" + (results_dir / IDS).read_bytes())
    assert run_compare({"g": [str(bom)]}, instances=str(ids), n_boot=100)["instances"]["n"] == 500


def test_ids_are_trimmed_in_tables_lists_and_memory(tmp_path):
    from srft.compare.harness import Run, compare_runs

    table = tmp_path / "t.csv"
    table.write_text("instance_id,r1\nx__y-1 ,1\n x__y-2,0\n")
    ids = tmp_path / "ids.txt"
    ids.write_text(" x__y-1\nx__y-2  \n")
    result = run_compare({"a": [f"{table}:r1"]}, instances=str(ids), n_boot=100)
    assert result["instances"]["n"] == 2 and result["systems"][0]["runs"][0]["n_missing"] == 0
    assert run_compare({"a": [f"{table}:r1"]}, n_boot=100)["instances"]["n"] == 2  # not a third instance
    table.write_text("instance_id,r1\nx__y-1 ,1\nx__y-1,0\n")
    with pytest.raises(CompareError, match=r"t\.csv: duplicate instance id 'x__y-1' \(rows 2 and 3\)"):
        run_compare({"a": [str(table)]})
    memory = {"a": [Run.from_resolved("r", {"a__b-1 ": True, "a__b-2": False})],
              "b": [Run.from_resolved("r", {"a__b-1": False, "a__b-2": False})]}
    assert compare_runs(memory, instances=["a__b-1", " a__b-2"])["comparisons"][0]["a_only"] == 1
    with pytest.raises(CompareError, match="duplicate instance id 'a__b-1'"):
        compare_runs({"a": [Run.from_resolved("r", {"a__b-1 ": True, "a__b-1": False})]})


def test_a_run_with_no_evaluated_instance_is_an_error(r, tmp_path):
    table = tmp_path / "runs.csv"
    table.write_text("instance_id,r1,r2\nx__y-1,1,\nx__y-2,0,NA\n")
    with pytest.raises(CompareError, match=r"runs\.csv:r2: no evaluated instance: every outcome is blank/NA"):
        run_compare({"a": [f"{table}:r1"], "b": [f"{table}:r2"]})
    res = CliRunner().invoke(app, ["compare", "-s", f"a={table}:r1", "-s", f"b={table}:r2", "--json"])
    assert res.exit_code == 2 and "runs.csv:r2: no evaluated instance" in json.loads(res.stdout)["error"]
    # evaluated, but on none of the instances compared
    with pytest.raises(CompareError, match=r"deepseek_chat_dev\.json: no evaluated instance: none of its 23"):
        run_compare({"g": [f"{r(CSV)}:{GEMINI}"], "d": [r(DEEPSEEK["deepseek_chat_dev"])]}, only=["django__*"])


def test_only_restricts_by_pattern_and_by_list(r, results_dir, tmp_path):
    ids, cols = read_verified(results_dir)
    django = np.array([i.startswith("django__") for i in ids])
    args = dict(systems={"g": [f"{r(CSV)}:{GEMINI}"], "s": [f"{r(CSV)}:{SONNET}"]}, instances=r(IDS), n_boot=200)
    by_id = run_compare(**args, only=["django__*"])
    by_repo = run_compare(**args, only=["django/django"])
    assert by_id["instances"]["n"] == int(django.sum()) == 231
    assert by_id["instances"]["sha256"] == by_repo["instances"]["sha256"]
    assert by_id["instances"]["restricted"] == {"only": ["django__*"], "only_instances": None, "before": 500,
                                                "kept": 231, "not_found": 0}
    gem, son = (s["rate"] for s in by_id["systems"])
    assert (gem, son) == (cols[GEMINI][django].mean(), cols[SONNET][django].mean())
    assert by_id["comparisons"][0]["diff"] == pytest.approx((cols[GEMINI] - cols[SONNET])[django].mean(), abs=1e-15)
    listed = tmp_path / "subset.txt"
    listed.write_text("".join(f"  {i} \n" for i in ids[:40]) + "nope__nope-1\n")
    sub = run_compare(**args, only_instances=str(listed))
    assert sub["instances"]["n"] == 40 and sub["instances"]["restricted"]["not_found"] == 1
    assert any("1 of its 41 ids are not among the compared instances" in w for w in sub["warnings"])
    both = run_compare(**args, only_instances=str(listed), only=["astropy__*"])
    assert both["instances"]["n"] == sum(i.startswith("astropy__") for i in ids[:40])
    with pytest.raises(CompareError, match="--only nomatch\\*: no instance left"):
        run_compare(**args, only=["nomatch*"])


# -- statistics that follow the design ----------------------------------------------------------------------

def test_mde_is_null_when_undefined(r):
    same = run_compare({"sbcli": [r(SBCLI)], "leaderboard": [f"{r(CSV)}:{GEMINI}"]}, n_boot=200)
    few = run_compare({"dev": [r(DEEPSEEK["deepseek_chat_dev"])],
                       "noparallel": [r(DEEPSEEK["deepseek_lite_dev_noparallel"])]}, n_boot=200)
    from srft.compare.render import render_markdown

    for result in (same, few):  # no discordant pair; 3 discordant of 23 can never reach 80% power
        (pair,) = result["comparisons"]
        assert pair["mde"]["value"] is None and '"value": null' in json.dumps(pair["mde"])
        assert render_markdown(result).splitlines()[7].endswith("| - |")  # the comparison row's MDE cell
    assert few["comparisons"][0]["n_discordant"] == 3 and mcnemar_power(23, 3 / 23, 3 / 23) < 0.8


def test_p_value_follows_the_design(r, results_dir):
    """Cluster bootstrap and two-level designs report the bootstrap p that inverts their CI (a plain numpy
    cluster bootstrap gives the same p within Monte-Carlo error); the plain design keeps the sign test."""
    ids, cols = read_verified(results_dir)
    result = run_compare(inputs=[r(CSV)], instances=r(IDS), baseline=GEMINI, cluster="repo", n_boot=2_000)
    assert result["method"]["test"] == "percentile-bootstrap test (p inverts the CI)"
    for pair in result["comparisons"]:
        assert (pair["p_value"] < 0.05) == (not pair["ci"][0] <= 0 <= pair["ci"][1]), pair["a"]
    pair = next(p for p in result["comparisons"] if p["a"] == SONNET)
    codes = repo_codes(ids)
    groups = [np.flatnonzero(codes == g) for g in range(12)]
    d = cols[SONNET] - cols[GEMINI]
    rng = np.random.default_rng(5)
    reps = np.array([np.concatenate([d[groups[g]] for g in rng.integers(0, 12, 12)]).mean() for _ in range(4_000)])
    reference = 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))
    assert pair["p_value"] == pytest.approx(reference, abs=0.01) and abs(pair["p_value"] - pair["p_sign"]) > 0.005
    runs = run_compare({"a": [r(DEEPSEEK["deepseek_chat_dev"]), r(DEEPSEEK["deepseek_chat_dev_rerun"])],
                        "b": [r(DEEPSEEK["deepseek_lite_dev_noparallel"])]}, two_level=True, n_boot=2_000)
    (two,) = runs["comparisons"]
    assert (two["p_value"] < 0.05) == (not two["ci"][0] <= 0 <= two["ci"][1]) and two["p_value"] != two["p_sign"]


def test_markdown_legend_names_solve_fractions_with_several_runs(r):
    from srft.compare.render import render_markdown

    runs = [r(p) for p in DEEPSEEK.values()]
    several = render_markdown(run_compare({"a": runs[:2], "b": runs[2:]}, n_boot=200))
    single = render_markdown(run_compare({"a": runs[:1], "b": runs[2:]}, n_boot=200))
    assert "instances where A's / B's solve fraction (over its runs) is higher" in several
    assert "solved by A only" not in several
    assert "solved by A only / B only / both / neither" in single


def test_effective_clusters_and_small_cluster_cis(r, results_dir):
    ids, cols = read_verified(results_dir)
    sizes = np.bincount(repo_codes(ids))
    args = dict(systems={"g": [f"{r(CSV)}:{GEMINI}"], "o": [f"{r(CSV)}:{GPT5}"]}, instances=r(IDS), n_boot=2_000,
                cluster="repo")
    boot = run_compare(**args)
    info = boot["instances"]["clusters"]
    assert info["effective_clusters"] == pytest.approx(500 ** 2 / (sizes ** 2).sum(), rel=1e-12)
    assert any("only 12 clusters (effective number 3.9" in w and "--cluster-ci wild" in w for w in boot["warnings"])
    cr2 = run_compare(**args, cluster_ci="cr2")
    (pair,) = cr2["comparisons"]
    low, high, se, df = cr2_reference(cols[GEMINI] - cols[GPT5], repo_codes(ids))
    assert pair["ci"] == pytest.approx([low, high], rel=1e-9) and pair["se"] == pytest.approx(se, rel=1e-9)
    assert pair["p_value"] == pytest.approx(2 * scipy.stats.t.sf(abs(pair["diff"]) / se, df), rel=1e-9)
    assert pair["mde"]["method"] == "t(3.33) quantiles, null variance" and pair["mde"]["by_runs"] is None
    assert not any("clusters" in w for w in cr2["warnings"])
    wild = run_compare(**args, cluster_ci="wild")
    (w_pair,) = wild["comparisons"]
    assert (w_pair["p_value"] < 0.05) == (not w_pair["ci"][0] <= 0 <= w_pair["ci"][1])
    for p in (pair, w_pair):  # a test that needs |diff| > half the CI to reject has an MDE above that
        assert p["mde"]["value"] > (p["ci"][1] - p["ci"][0]) / 2
    assert w_pair["ci"][1] - w_pair["ci"][0] > boot["comparisons"][0]["ci"][1] - boot["comparisons"][0]["ci"][0]
    assert wild["method"]["ci"].startswith("wild cluster bootstrap-t") and wild["systems"][0]["se_boot"] is None
    assert wild["method"]["test"].startswith("wild cluster bootstrap-t (restricted, Webb weights) (the test")
    with pytest.raises(CompareError, match="--cluster-ci wild corrects clustered CIs: add --cluster repo"):
        run_compare(args["systems"], cluster_ci="wild")
    with pytest.raises(CompareError, match="--cluster-ci cr2 does not resample runs"):
        run_compare(**args, cluster_ci="cr2", two_level=True)


def test_cli_restricts_and_corrects_clusters(r, results_dir, tmp_path):
    ids, _ = read_verified(results_dir)
    listed = tmp_path / "subset.txt"
    listed.write_text("\n".join(ids[200:]) + "\n")
    base = ["compare", "-s", f"g={r(CSV)}:{GEMINI}", "-s", f"s={r(CSV)}:{SONNET}", "--instances", r(IDS),
            "--n-boot", "500", "--json"]
    res = CliRunner().invoke(app, [*base, "--only", "django__*", "--only", "sympy/sympy", "--only-instances",
                                   str(listed), "--cluster", "repo", "--cluster-ci", "cr2"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    expected = [i for i in ids[200:] if i.startswith(("django__", "sympy__"))]
    assert result["instances"]["n"] == len(expected) and result["config"]["only"] == ["django__*", "sympy/sympy"]
    assert result["config"]["cluster_ci"] == "cr2" and result["instances"]["clusters"]["n_clusters"] == 2
    bad = CliRunner().invoke(app, [*base, "--cluster-ci", "wild"])
    assert bad.exit_code == 2 and "--cluster-ci wild corrects clustered CIs: add --cluster repo" in \
        json.loads(bad.stdout)["error"]
    bad = CliRunner().invoke(app, [*base, "--cluster", "repo", "--cluster-ci", "jackknife"])
    assert bad.exit_code == 2 and "--cluster-ci" in json.loads(bad.stdout)["error"]
