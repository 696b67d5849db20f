"""The five tools of the synthesis agent. Installed as ``local_agent.tools`` (the folder stays at ``tools/``)."""
from __future__ import annotations

from typing import Any

from .base import BackendUnavailable, Tool, ToolError, Workspace

TOOL_ORDER = ("prompt_gen", "image_gen", "quality_eval", "knowledge_retrieval", "mask_gen")


def build_tools(config: dict[str, dict[str, Any]]) -> dict[str, Tool]:
    """Build the tools a profile names. A tool whose backend is ``none`` is left out."""
    from . import image_gen, knowledge_retrieval, mask_gen, prompt_gen, quality_eval

    modules = {"prompt_gen": prompt_gen, "image_gen": image_gen, "quality_eval": quality_eval,
               "knowledge_retrieval": knowledge_retrieval, "mask_gen": mask_gen}
    unknown = set(config) - set(modules)
    if unknown:
        raise ValueError(f"unknown tool(s) in profile: {', '.join(sorted(unknown))}; tools are {', '.join(TOOL_ORDER)}")
    config = with_shared_scale(config)
    tools: dict[str, Tool] = {}
    for name in TOOL_ORDER:
        if name not in config and name != "knowledge_retrieval":
            raise ValueError(f"profile: tools.{name} is missing (every tool but knowledge_retrieval needs a backend)")
        tool_config = config.get(name, {"backend": "none"})
        if not isinstance(tool_config, dict) or "backend" not in tool_config:
            raise ValueError(f"profile: tools.{name} needs a 'backend' key")
        tool = modules[name].build(tool_config)
        if tool is not None:
            tools[name] = tool
    return tools


def with_shared_scale(config: dict[str, Any]) -> dict[str, Any]:
    """The image generator's ``size_scale`` (real areas times F, with an atlas) handed to the calibrated judge when
    the judge has none of its own: a judge measuring at real sizes would call every scaled attempt "too large" and
    the loop would shrink it back."""
    from .painter.priors import atlas_off

    gen, judge = config.get("image_gen"), config.get("quality_eval")
    if not (isinstance(gen, dict) and isinstance(judge, dict)) or "size_scale" not in gen or "size_scale" in judge:
        return config
    if judge.get("backend") != "calibrated" or atlas_off(gen.get("atlas")):
        return config
    return {**config, "quality_eval": {**judge, "size_scale": gen["size_scale"]}}


__all__ = ["BackendUnavailable", "Tool", "ToolError", "Workspace", "build_tools", "TOOL_ORDER"]
