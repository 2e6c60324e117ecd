"""`deep_research`: a tool whose work is a model's (pydantic-ai), run as one task.

Served by `serve --model` and `worker --model`; the `research` story runs it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastmcp import Context, FastMCP
from fastmcp.dependencies import CurrentContext
from fastmcp.exceptions import ToolError
from pydantic import BaseModel, Field

from deploy import DemoError
from deploy.commit import committed
from tasks_demo import TASK, journaled, report, task_body


# Deep research is what tasks are for: minutes of model calls, paid per token,
# that should survive the caller. Any model string pydantic-ai accepts
# (anthropic:claude-sonnet-4-5, google-gla:gemini-2.5-flash, or `test`, its
# offline model), set per process by `research --model`, `serve --model` or
# `worker --model`; the key comes from the provider's usual variable.
RESEARCH_MODEL: Any = None


async def deep_research(
    topic: Annotated[str, Field(description="what to research", max_length=200)],
    sources: Annotated[int, Field(description="sources to search", ge=1, le=10)] = 3,
    seconds: Annotated[float, Field(description="how long a search takes", ge=0, le=60,
                                    allow_inf_nan=False)] = 2.0,
    ctx: Context = CurrentContext(),
) -> dict:
    """Research `topic`: a model plans, its searches (its tool calls) run in parallel."""
    from pydantic_ai import Agent, ToolCallPart  # this path only: the first run stays light
    from pydantic_ai.exceptions import AgentRunError, UserError
    from pydantic_ai.usage import UsageLimits

    class Report(BaseModel):
        summary: str
        findings: list[str]

    searched: list[str] = []

    async def search(query: str) -> str:
        """Search one source for `query`."""
        searched.append(query)
        return await asyncio.sleep(seconds, f"3 sources agree on {query!r}")

    # A model spends money: cap what one task may ask of it, whatever it decides.
    limits = UsageLimits(request_limit=sources + 3, tool_calls_limit=sources)
    try:  # building the agent resolves the model: a missing key shows here
        agent = Agent(RESEARCH_MODEL, output_type=Report, tools=[search], instructions=(
            f"Research the topic. Call `search` for {sources} different queries in one turn, "
            "then write a short summary and one finding per search."))
        async with agent.iter(f"Topic: {topic}", usage_limits=limits) as run:
            async for node in run:  # each step of the agent, as the task's status
                if Agent.is_model_request_node(node):
                    await report(ctx, 0, None,
                                 f"asking the model (request {run.usage.requests + 1})")
                elif Agent.is_call_tools_node(node):
                    calls = [p.args_as_dict().get("query", "") for p in node.model_response.parts
                             if isinstance(p, ToolCallPart) and p.tool_name == "search"]
                    if calls:  # (the model's final answer is a tool call too)
                        await report(ctx, 0, None, f"searching: {' | '.join(calls)}")
    except (AgentRunError, UserError) as error:  # a model error, a missing key: an answer
        raise ToolError(f"the model failed: {error}") from None
    found = run.result.output
    return {"topic": topic, "sources": len(searched), "summary": found.summary,
            "findings": found.findings, "model_requests": run.usage.requests}


def model_in_place(server: FastMCP) -> None:
    """With RESEARCH_MODEL set, `server` has `deep_research`, run by that model."""
    if RESEARCH_MODEL is not None:
        server.tool(task_body(committed(journaled(deep_research))), task=TASK)


def check_model(model: str) -> None:
    """What a model string needs, in one line, before any task is submitted."""
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    try:
        infer_model(model)
    except ImportError as error:  # the provider's SDK is not installed
        extra = re.search(r"pydantic-ai-slim\[([\w-]+)\]", str(error))
        raise DemoError(f"{model} needs its provider's package: uv run --with "
                        f"'pydantic-ai-slim[{extra[1] if extra else '...'}]' tasks_demo.py "
                        f"research --model {model}") from None
    except UserError as error:  # an unknown model, or the variable to set for the key
        raise DemoError(f"{model}: {error}") from None
