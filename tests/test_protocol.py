import socket

import pytest

from local_agent.protocol import (ToolSpec, format_answer, format_tool_call, format_tool_response,
                                  parse_agent_message, parse_tool_response)

SPECS = {
    "image_gen": ToolSpec("image_gen", {"properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}),
    "mask_gen": ToolSpec("mask_gen", {"properties": {"image_index": {"type": "integer"}}, "required": ["image_index"]}),
}
ANSWER = {"status": "success", "final_image_index": 2, "mask_generated": True, "synthesis_logic": "ok"}


def test_tool_call_round_trip():
    text = format_tool_call("image_gen", {"prompt": "Using the provided image, change only …"}, "edit it")
    parsed = parse_agent_message(text, SPECS)
    assert parsed.error is None and parsed.answer is None
    assert parsed.thinking == "edit it"
    assert parsed.call.name == "image_gen" and parsed.call.arguments["prompt"].startswith("Using")


def test_answer_round_trip():
    parsed = parse_agent_message(format_answer(ANSWER, "done"), SPECS)
    assert parsed.answer == ANSWER and parsed.call is None and parsed.error is None


def test_tool_response_round_trip():
    text = format_tool_response("quality_eval", {"location_score": 4, "review": "ok"})
    assert text.startswith("[Tool Response from quality_eval]")
    assert parse_tool_response(text) == ("quality_eval", {"location_score": 4, "review": "ok"})
    with pytest.raises(ValueError):
        parse_tool_response("just text")


def test_fenced_json_is_accepted():
    text = '<thinking>x</thinking><tool_call>```json\n{"name": "mask_gen", "arguments": {"image_index": 3}}\n```</tool_call>'
    assert parse_agent_message(text, SPECS).call.arguments == {"image_index": 3}


@pytest.mark.parametrize("text, fragment", [
    ("", "empty message"),
    ("I will now edit the image.", "no <tool_call>"),
    ("<thinking>a</thinking><tool_call>{\"name\": \"image_gen\"", "unclosed tag"),
    ("<tool_call>{name: image_gen}</tool_call>", "not valid JSON"),
    ("<tool_call>[1, 2]</tool_call>", "expected a JSON object"),
    ('<tool_call>{"name": "paint", "arguments": {}}</tool_call>', "unknown tool 'paint'"),
    ('<tool_call>{"arguments": {}}</tool_call>', 'string "name"'),
    ('<tool_call>{"name": "image_gen", "arguments": "x"}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "image_gen", "arguments": {}}</tool_call>', "missing required argument(s): prompt"),
    ('<tool_call>{"name": "image_gen", "arguments": {"prompt": "p", "strength": 2}}</tool_call>', "unknown argument"),
    ('<tool_call>{"name": "mask_gen", "arguments": {"image_index": "2"}}</tool_call>', "must be a integer"),
    ('<tool_call>{"name": "mask_gen", "arguments": {"image_index": true}}</tool_call>', "must be a integer"),
    ('<tool_call>{"name": "mask_gen", "arguments": {"image_index": 2}}</tool_call>'
     '<tool_call>{"name": "mask_gen", "arguments": {"image_index": 3}}</tool_call>', "one action per message"),
    ('<tool_call>{"name": "mask_gen", "arguments": {"image_index": 2}}</tool_call><answer>{}</answer>',
     "one action per message"),
    ("<answer>{\"status\": \"success\"}</answer>", "missing key(s)"),
    ("<answer>not json</answer>", "answer is not valid JSON"),
])
def test_malformed_messages_become_errors(text, fragment):
    parsed = parse_agent_message(text, SPECS)
    assert parsed.call is None and parsed.answer is None
    assert fragment in parsed.error


def test_default_specs_accept_paper_tools_without_validation():
    parsed = parse_agent_message('<tool_call>{"name": "knowledge_retrieval", "arguments": {"x": 1}}</tool_call>')
    assert parsed.call.name == "knowledge_retrieval"


def test_network_is_blocked_in_tests():
    with pytest.raises(RuntimeError, match="network"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)
