"""Training the agent: rewards, reverse-synthesis trajectories (Algorithm 2), SFT and GRPO, and ablations.

Import-light on purpose: torch, transformers and trl are imported inside the functions that train.
"""
