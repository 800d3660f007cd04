"""srft: Step Rejection Fine-Tuning for LLM agents.

Read trajectories -> label steps with a critic -> weigh steps with a policy -> build exactly-masked token
sequences -> train -> compare with paired statistics. `import srft` does no I/O and loads no torch.
"""

__version__ = "0.1.0"
