"""The lab: a CPU-sized bug-fixing environment whose step labels are known, to test SRFT end to end.

`tasks` generates seeded repositories with planted bugs, `env` runs the tools on them, `teacher` is a scripted
noisy agent that records the true label of every step it takes, `data` writes its trajectories and labels in the
formats users' data arrives in, `tokenizer` trains a small BPE tokenizer with a ChatML tool-calling template, `base`
pretrains the shared base student, `rollout` lets a trained student act through that template, `config` holds the
presets and turns one into recipe sections, and `report` writes the results tables. The experiment itself runs
through the pipeline like any recipe (`srft.run.lab` adds the lab's nodes, `srft.run.experiment.run_lab` is
`srft lab`). See docs/lab.md.
"""
