"""Test rigs shipped with the package (a fault-injecting fake OpenAI server); never used by a stage."""
