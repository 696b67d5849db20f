"""Policies: given the conversation, the next message. A plain dict from backend name to class."""
from __future__ import annotations

from .scripted import ScriptedPolicy
from .vlm import SmolLM2Policy, VLMPolicy

POLICIES: dict[str, type] = {"scripted": ScriptedPolicy, "vlm": VLMPolicy, "smollm2": SmolLM2Policy}
