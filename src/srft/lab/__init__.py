"""The lab: a CPU-sized bug-fixing environment whose step labels are known, to test SRFT end to end.

`tasks` generates seeded repositories with planted bugs, `env` runs the tools on them, `teacher` is a scripted
noisy agent that records the true label of every step it takes, `tokenizer` trains a small BPE tokenizer with a
ChatML tool-calling template, `rollout` lets a trained student act through that template, and `run` drives the
whole experiment through the real stages (ingest -> annotate -> build -> train -> compare). See docs/lab.md.
"""
