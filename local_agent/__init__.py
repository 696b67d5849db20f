"""local-agent: offline agentic industrial anomaly synthesis (AnomalyAgent) and inspection (AgentIAD)."""
__version__ = "0.1.0"
