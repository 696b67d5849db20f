"""The paper's message protocol: format and parse agent and tool messages.

An agent message is ``<thinking>…</thinking>`` followed by exactly one of
``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` or ``<answer>{…}</answer>``.
A tool's output comes back as ``[Tool Response from <tool>]`` and a JSON body.

Parsing never raises on model output: whatever is wrong becomes a ``Parsed.error`` string
that the loop feeds back to the policy as an observation, so a model can recover.
A model whose chat template has its own tool calls (Qwen's ``tool_calls``) is translated both ways at the end.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

TOOL_NAMES = ("prompt_gen", "image_gen", "quality_eval", "knowledge_retrieval", "mask_gen")
ANSWER_KEYS = ("status", "final_image_index", "mask_generated", "synthesis_logic")

_THINK = re.compile(r"<thinking>(.*?)</thinking>", re.S)
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_RESPONSE = re.compile(r"^\[Tool Response from (?P<tool>[A-Za-z_]\w*)\]\s*(?P<body>.*)$", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class Parsed:
    """One agent message, parsed. Exactly one of ``call``, ``answer`` or ``error`` is set."""

    thinking: str = ""
    call: ToolCall | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class ToolSpec:
    """What the parser needs to validate a call: the tool's JSON-schema parameters."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


def format_tool_call(name: str, arguments: Mapping[str, Any], thinking: str = "") -> str:
    body = json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)
    return f"<thinking>{thinking}</thinking><tool_call>{body}</tool_call>"


def format_answer(answer: Mapping[str, Any], thinking: str = "") -> str:
    return f"<thinking>{thinking}</thinking><answer>{json.dumps(dict(answer), ensure_ascii=False)}</answer>"


def format_tool_response(tool: str, result: Mapping[str, Any]) -> str:
    return f"[Tool Response from {tool}]\n{json.dumps(dict(result), ensure_ascii=False)}"


def parse_tool_response(text: str) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`format_tool_response`; raises ValueError on text that is not a tool response."""
    m = _RESPONSE.match(text.strip())
    if not m:
        raise ValueError("not a tool response: missing '[Tool Response from <tool>]' header")
    body = json.loads(m.group("body"))
    if not isinstance(body, dict):
        raise ValueError("tool response body must be a JSON object")
    return m.group("tool"), body


def _loads_object(raw: str) -> dict[str, Any]:
    """json.loads that tolerates a ```json fence, and insists on an object."""
    raw = raw.strip()
    if raw.startswith("```"):
        raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw)
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _check_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
    """Validate arguments against the tool's JSON schema subset (required, known keys, types)."""
    props: Mapping[str, Any] = spec.parameters.get("properties", {})
    required = spec.parameters.get("required", [])
    missing = [k for k in required if k not in arguments]
    if missing:
        return f"tool '{spec.name}' is missing required argument(s): {', '.join(missing)}"
    unknown = [k for k in arguments if k not in props]
    if unknown:
        return (f"tool '{spec.name}' got unknown argument(s): {', '.join(unknown)}; "
                f"it takes: {', '.join(props) or 'no arguments'}")
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}
    for key, value in arguments.items():
        want = props[key].get("type")
        py = types.get(want)
        if py is None:
            continue
        ok = isinstance(value, py) and not (want in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return f"tool '{spec.name}' argument '{key}' must be a {want}, got {type(value).__name__}"
    return None


def parse_agent_message(text: str, tools: Mapping[str, ToolSpec] | None = None) -> Parsed:
    """Parse one agent message. ``tools`` maps tool name to spec; by default the paper's five, unvalidated."""
    if tools is None:
        tools = {n: ToolSpec(n, {"properties": {}}) for n in TOOL_NAMES}
        validate = False
    else:
        validate = True
    if not isinstance(text, str) or not text.strip():
        return Parsed(error="empty message: write <thinking>…</thinking> then one <tool_call> or <answer>")
    thinking = "\n".join(t.strip() for t in _THINK.findall(text))
    calls = _CALL.findall(text)
    answers = _ANSWER.findall(text)
    if len(calls) + len(answers) == 0:
        if "<tool_call>" in text or "<answer>" in text:
            return Parsed(thinking, error="unclosed tag: close <tool_call> with </tool_call> or <answer> with </answer>")
        return Parsed(thinking, error="no <tool_call>…</tool_call> or <answer>…</answer> found in the message")
    if len(calls) + len(answers) > 1:
        return Parsed(thinking, error=f"one action per message: found {len(calls)} tool call(s) and {len(answers)} answer(s)")
    if answers:
        try:
            answer = _loads_object(answers[0])
        except ValueError as e:
            return Parsed(thinking, error=f"answer is not valid JSON: {e}")
        missing = [k for k in ANSWER_KEYS if k not in answer]
        if missing:
            return Parsed(thinking, error=f"answer is missing key(s): {', '.join(missing)}")
        return Parsed(thinking, answer=answer)
    try:
        body = _loads_object(calls[0])
    except ValueError as e:
        return Parsed(thinking, error=f"tool call is not valid JSON: {e}")
    name = body.get("name")
    arguments = body.get("arguments", {})
    if not isinstance(name, str):
        return Parsed(thinking, error='tool call needs a string "name"')
    if name not in tools:
        return Parsed(thinking, error=f"unknown tool '{name}'; available: {', '.join(tools)}")
    if not isinstance(arguments, dict):
        return Parsed(thinking, error='tool call "arguments" must be a JSON object')
    if validate:
        problem = _check_arguments(tools[name], arguments)
        if problem:
            return Parsed(thinking, error=problem)
    return Parsed(thinking, call=ToolCall(name, arguments))


# ----------------------------------------------------------------------- the protocol <-> a chat template's tool calls
def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def protocol_messages(messages: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A chat-template tool-calling conversation (TRL's, OpenAI's) in the paper's protocol: each ``tool_calls`` entry
    becomes a
    ``<tool_call>{json}</tool_call>`` in its assistant message (two calls in one message stay two, which the protocol
    rejects), tool messages keep their ``[Tool Response from X]`` text. Protocol messages pass through unchanged."""
    out = []
    for m in messages:
        content = _text(m.get("content"))
        if m.get("role") == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                function = call.get("function", call)
                arguments = function.get("arguments", {})
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments)
                    except ValueError:
                        pass
                body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
                content += f"<tool_call>{body}</tool_call>"
        out.append({"role": m.get("role"), "content": content})
    return out


def native_tool_calls(messages: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The inverse of :func:`protocol_messages`, for a policy whose chat template calls tools (SFT data for GRPO with
    ``rollouts: environment``; the ``vlm`` policy with ``native_tools``): each ``<tool_call>`` leaves the assistant
    text for a ``tool_calls`` entry that the template renders; tool messages get their tool's ``name``. Arguments
    stay a JSON string (Qwen's templates print it as is), so a dataset of calls with different arguments keeps one
    column type."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], _text(m.get("content"))
        if role == "assistant":
            parsed = parse_agent_message(content)
            if parsed.call is not None:
                thinking = f"<thinking>{parsed.thinking}</thinking>" if parsed.thinking else ""
                call = {"name": parsed.call.name, "arguments": json.dumps(parsed.call.arguments, ensure_ascii=False)}
                out.append({"role": role, "content": thinking, "tool_calls": [{"type": "function", "function": call}]})
                continue
        elif role == "tool":
            try:
                name, _ = parse_tool_response(content)
            except ValueError:
                name = m.get("name", "")
            out.append({"role": role, "name": name, "content": content})
            continue
        out.append({"role": role, "content": content})
    return out
