"""What every tool shares: the workspace it acts on, the error a model can recover from, the Tool base class.

A tool is a small class with a ``name``, a ``description``, a JSON-schema ``parameters`` block the policy sees,
and ``__call__(workspace, **arguments) -> dict``. The work itself is done by a backend chosen by name in the
profile; each tool module keeps a plain ``BACKENDS`` dict from backend name to class.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


class ToolError(Exception):
    """A bad call (wrong index, bad argument value). Becomes an observation the policy can act on."""


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (missing weights, missing package). Stops the run with a one-line reason."""


@dataclass
class Workspace:
    """The episode as a tool sees it: the task and the conversation's images, indexed from 1.

    Image 1 is the normal image; image_gen appends each attempt. Image generation always edits image 1.
    """

    category: str
    anomaly_type: str
    images: list[np.ndarray]
    seed: int = 0
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    prompts: dict[int, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    def image(self, index: Any) -> np.ndarray:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ToolError(f"image_index must be an integer, got {index!r}")
        if not 1 <= index <= len(self.images):
            raise ToolError(f"image_index {index} does not exist; images are numbered 1..{len(self.images)}")
        return self.images[index - 1]

    def add_image(self, image: np.ndarray) -> int:
        self.images.append(image)
        return len(self.images)

    @property
    def normal(self) -> np.ndarray:
        return self.images[0]


def build_backend(backends: dict[str, type | str], tool: str, config: dict[str, Any]) -> Any:
    """Instantiate ``config['backend']`` from a tool's BACKENDS dict, passing the remaining keys as options.

    A BACKENDS value may be a class or a ``"module:Class"`` string: heavy backends (diffusers, transformers, faiss)
    are then imported only when a profile asks for them, so ``local-agent --help`` stays instant.
    """
    options = dict(config)
    name = options.pop("backend", None)
    if name not in backends:
        raise ValueError(f"unknown backend {name!r} for tool {tool}; choose one of: {', '.join(backends)}")
    cls = backends[name]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:  # name the option: "invalid literal for int()" alone does not say which
        wrong = wrong_option(cls, f"tools.{tool}", options)
        raise ValueError(f"bad options for {tool} backend {name!r}: {wrong or e}") from e


def positive_option(name: str, value: Any) -> float:
    """A backend option that must be a number above 0, or a one-line error naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise ValueError(f"option {name}: expected a number above 0, got {value!r}")
    return number


def wrong_option(cls: Any, where: str, options: dict[str, Any]) -> str | None:
    """The first option whose value cannot take the type of its parameter's default (a number, a flag), named as
    ``<where>.<key>`` (e.g. ``tools.quality_eval.pass_location``)."""
    import inspect

    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for key, value in options.items():
        if key not in parameters and not open_ended:
            return f"{where}.{key} is not an option of this backend (options: {', '.join(parameters) or 'none'})"
        default = parameters[key].default if key in parameters else None
        if isinstance(default, bool) and value not in (True, False):
            return f"{where}.{key} must be true or false, got {value!r}"
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                type(default)(value)
            except (TypeError, ValueError):
                return f"{where}.{key} must be a number (default {default}), got {value!r}"
    return None


class Tool:
    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]]

    def __init__(self, backend: Any):
        self.backend = backend

    def spec(self) -> dict[str, Any]:
        """The function schema a policy sees (OpenAI / chat-template style)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def __call__(self, workspace: Workspace, **arguments: Any) -> dict[str, Any]:
        raise NotImplementedError


def string_arg(arguments: dict[str, Any], key: str, default: str | None = None) -> str:
    value = arguments.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"argument '{key}' must be a non-empty string")
    return value.strip()
