"""Knowledge Retrieval (KR): physical descriptions of a defect, to refine a prompt after a failed attempt.

Backends return passages ``[{"text", "source", "score"}]``. With backend ``none`` the tool is left out of the
agent's tool list altogether, so a policy never sees a tool that cannot answer.
"""
from __future__ import annotations

from typing import Any

from .base import Tool, ToolError, Workspace, build_backend, string_arg

BACKENDS: dict[str, type | str] = {"faiss": "local_agent.knowledge.retriever:FaissKnowledge"}


class KnowledgeRetrieval(Tool):
    name = "knowledge_retrieval"
    description = ("Retrieve physical knowledge about a defect: appearance, where it occurs, how to render and judge "
                   "it. Returns {'passages': [{'text', 'source', 'score'}]}.")
    parameters = {
        "type": "object",
        "properties": {
            "item_name": {"type": "string", "description": "object category"},
            "anomaly_type": {"type": "string", "description": "defect type"},
            "query": {"type": "string", "description": "optional free text to steer the search, e.g. the review"},
        },
        "required": ["item_name", "anomaly_type"],
    }

    def __call__(self, workspace: Workspace, **arguments: Any) -> dict[str, Any]:
        item = string_arg(arguments, "item_name")
        anomaly = string_arg(arguments, "anomaly_type")
        query = arguments.get("query")
        if query is not None and not isinstance(query, str):
            raise ToolError("argument 'query' must be a string")
        passages = self.backend.retrieve(item, anomaly, query=query or "", k=3)
        return {"passages": passages}


def build(config: dict[str, Any]) -> KnowledgeRetrieval | None:
    if config.get("backend", "none") == "none":
        return None
    return KnowledgeRetrieval(build_backend(BACKENDS, KnowledgeRetrieval.name, config))
