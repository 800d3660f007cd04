"""Critic benchmark: prompt cost of one-pass labelling, and throughput against a fixed-delay endpoint.

1. Prompt tokens: for every real trajectory in ../shared, the tokens of all critic prompts (every window) vs the
   trajectory's own tokens (the conversation rendered by the Qwen2.5-Coder chat template, tools included), both
   counted with the Qwen2.5-Coder tokenizer, with the default hindsight evidence (per-test results and the final
   patch, where a trajectory has them; each section's budget printed). Goal <= 1.2x for every trajectory.
   Printed beside it: the same without evidence, and what a per-step critic (one call per step, each holding the
   task and every step so far, O(n^2)) would send for the same trajectories.
2. Throughput: `srft.critic.annotate` against the local fake OpenAI server that answers after a fixed delay;
   calls/s vs the ideal concurrency / delay. Goal >= 80%.

    .venv/bin/python benchmarks/bench_critic.py [--shared ../shared] [--delay 0.5] [--concurrency 16] [--calls 160]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from srft.critic.annotate import annotate_trajectories
from srft.critic.prompt import PromptBuilder, PromptConfig
from srft.model import FunctionCall, Message, Outcome, Source, ToolCall, Trajectory, steps_from_messages


def own_tokens(traj: Trajectory, tokenizer) -> int:
    """The trajectory as a model sees it: the whole conversation through the tokenizer's chat template
    (tool-call arguments as objects, as chat templates expect)."""
    messages = []
    for m in traj.messages:
        msg = m.to_openai()
        if m.tool_calls:
            msg["tool_calls"] = [{"type": "function", "id": tc.id, "function": {
                "name": tc.function.name, "arguments": tc.arguments_dict() or {"raw": tc.function.arguments}}}
                for tc in m.tool_calls]
        messages.append(msg)
    ids = tokenizer.apply_chat_template(messages, tools=traj.tools, tokenize=True, return_dict=True)["input_ids"]
    return len(ids)


def per_step_total(builder: PromptBuilder, traj: Trajectory, plan) -> int:
    """A per-step critic's total prompt: for step k, the fixed prompt + steps 1..k (same step rendering)."""
    fixed = builder.counter.count(builder._render(traj, plan, [], []))
    running, total = 0, 0
    for c in plan.costs:
        running += c
        total += fixed + running
    return total


def bench_tokens(shared: Path) -> dict:
    from transformers import AutoTokenizer

    from srft.formats.ingest import ingest

    tokenizer = shared / "data" / "tokenizers" / "qwen2.5-coder-instruct"
    trajectories = ingest([str(shared / "data" / "trajectories")]).trajectories
    builder = PromptBuilder(PromptConfig(tokenizer=str(tokenizer)))
    bare = PromptBuilder(PromptConfig(tokenizer=str(tokenizer), evidence=[]))
    chat = AutoTokenizer.from_pretrained(str(tokenizer))
    ratios, one_pass, no_evidence, per_step, own, windows = [], 0, 0, 0, 0, 0
    shown: Counter = Counter()
    evidence_tokens: Counter = Counter()
    started = time.perf_counter()
    for traj in trajectories:
        plan = builder.plan(traj)
        ws = builder.windows(traj, plan)
        prompt = sum(w.prompt_tokens for w in ws)
        mine = own_tokens(traj, chat)
        ratios.append(prompt / mine)
        one_pass, own, windows = one_pass + prompt, own + mine, windows + len(ws)
        no_evidence += sum(w.prompt_tokens for w in bare.windows(traj))
        per_step += per_step_total(bare, traj, bare.plan(traj))
        for section in plan.evidence:
            shown[section.name] += 1
            evidence_tokens[section.name] += section.tokens * len(ws)
    return {"trajectories": len(trajectories), "windows": windows, "own_tokens": own, "prompt_tokens": one_pass,
            "ratio_total": one_pass / own, "ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
            "evidence_budget_tokens": {k: builder.config.budgets()[k] for k in builder.sections},
            "evidence_trajectories": dict(shown), "evidence_prompt_tokens": dict(evidence_tokens),
            "no_evidence_prompt_tokens": no_evidence, "no_evidence_ratio_total": no_evidence / own,
            "per_step_prompt_tokens": per_step, "per_step_ratio_total": per_step / own,
            "seconds": round(time.perf_counter() - started, 2)}


def synthetic(n: int) -> list[Trajectory]:
    out = []
    for k in range(n):
        messages = [Message(role="system", content="sys"), Message(role="user", content=f"Task {k}: fix add().")]
        for i in range(3):
            tc = ToolCall(id="c", function=FunctionCall(name="read_file", arguments=json.dumps({"path": f"f{i}.py"})))
            messages += [Message(role="assistant", content=f"read {i}", tool_calls=[tc]),
                         Message(role="tool", content=f"contents {i}", tool_call_id="c")]
        out.append(Trajectory(id=f"bench{k:05d}", instance_id=f"bench-{k}", messages=messages,
                              source=Source(format="bench", path="-", sha256="0" * 64),
                              steps=steps_from_messages(messages), outcome=Outcome.from_status("unresolved", "-")))
    return out


def serve(delay: float) -> tuple[subprocess.Popen, str]:
    """The fixed-delay endpoint in its own process (as a real server is), on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "srft.testing.fake_openai", "--port", str(port), "--delay",
                             str(delay)], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake endpoint did not start")


def bench_throughput(delay: float, concurrency: int, calls: int) -> dict:
    trajectories = synthetic(calls)
    proc, url = serve(delay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"critic": {"name": "openai", "options": {"base_url": url, "model": "bench"}},
                   "concurrency": concurrency}
            started = time.perf_counter()
            result = annotate_trajectories(trajectories, cfg, cache_path=Path(tmp) / "cache.sqlite")
            elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
    assert result.summary["calls"] == calls and result.summary["failed"] == 0, result.summary
    ideal = concurrency / delay
    return {"calls": calls, "delay_s": delay, "concurrency": concurrency, "seconds": round(elapsed, 2),
            "calls_per_s": calls / elapsed, "ideal_calls_per_s": ideal, "efficiency": calls / elapsed / ideal}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=160)
    args = parser.parse_args()
    results = {}
    shared = Path(args.shared)
    if (shared / "data" / "trajectories").exists():
        t = results["tokens"] = bench_tokens(shared)
        print(f"prompt tokens: {t['trajectories']} real trajectories, {t['windows']} windows; one-pass critic with "
              f"evidence {t['prompt_tokens']:,} vs own {t['own_tokens']:,} tokens = {t['ratio_total']:.3f}x (median "
              f"{t['ratio_median']:.3f}x, max {t['ratio_max']:.3f}x; goal <= 1.2x per trajectory); evidence budgets "
              f"{t['evidence_budget_tokens']}, shown in {t['evidence_trajectories']} trajectories, costing "
              f"{t['evidence_prompt_tokens']} prompt tokens; without evidence {t['no_evidence_ratio_total']:.3f}x; "
              f"a per-step critic would send {t['per_step_prompt_tokens']:,} = {t['per_step_ratio_total']:.1f}x")
    else:
        print(f"prompt tokens: skipped, no real trajectories under {shared}", file=sys.stderr)
    r = results["throughput"] = bench_throughput(args.delay, args.concurrency, args.calls)
    print(f"throughput: {r['calls']} calls, delay {r['delay_s']}s, concurrency {r['concurrency']}: "
          f"{r['calls_per_s']:.1f} calls/s vs ideal {r['ideal_calls_per_s']:.1f} = {r['efficiency']:.0%} "
          f"(goal >= 80%) in {r['seconds']}s")
    print(json.dumps(results, sort_keys=True))
    ok = r["efficiency"] >= 0.8 and ("tokens" not in results or results["tokens"]["ratio_max"] <= 1.2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
