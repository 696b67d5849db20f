"""Policies: given the conversation, the next message. A plain dict from backend name to class."""
from __future__ import annotations

from ..smollm import SmolLMPolicy
from .scripted import ScriptedPolicy
from .vlm import VLMPolicy

POLICIES: dict[str, type] = {"scripted": ScriptedPolicy, "vlm": VLMPolicy, "smollm2": SmolLMPolicy}
