"""The inspection agent (AgentIAD): Perceptive Zoomer and Comparative Retriever tools, the scripted inspector,
galleries of normal exemplars, the mini-MMAD evaluation and training rewards. Heavy imports stay inside functions."""
