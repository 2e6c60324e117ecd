# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "fastmcp[tasks]>=4.1.2,<5",
#     "pydocket",
#     "rich",
# ]
# ///
"""MCP background tasks, every pattern, running for real.

One file: an MCP server with timed tools, and one client pattern per
subcommand. Everything runs in this process over FastMCP's in-memory
transport, so what you see is the real protocol (tools/call answered with a
task, tasks/get, tasks/update, tasks/cancel), not a simulation.

    uv run tasks_demo.py all          # every pattern, in learning order
    uv run tasks_demo.py poll         # one pattern: a live dashboard
    uv run tasks_demo.py --scale 0.2 all   # the same, five times faster

Beyond one process: `serve` over HTTP, `worker` processes on Redis, and
`task submit|status|watch|result|cancel` from any other process; the
`tenants`, `restart` and `distributed` stories run them all for you.
`bench` measures what a task costs.

The server is also a module-level object, so any MCP client can use it:

    uv run fastmcp run tasks_demo.py:mcp --transport http

Read top to bottom: the command line, the server and its tools, client
helpers, the patterns in the order a learner meets them, the same server
across processes, the bench, and the thin layer that prints what each
pattern observed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

# --------------------------------------------------------------------------
# 1. The command line, parsed before anything heavy is imported
# --------------------------------------------------------------------------
# Importing fastmcp and its tasks package takes a couple of seconds. `--help`
# and a mistyped argument should answer at once, so the parser lives up here
# and runs before those imports (see the bottom of this block).

PATTERNS = {
    "compare": "3 s, 2 s and 1 s of work: sequential, asyncio.gather, background tasks",
    "await": "submit a task and await its result directly",
    "many": "many tasks at once, gathered; every result comes back exactly once",
    "poll": "a live dashboard of several tasks, then each task's state transitions",
    "fire-and-forget": "submit, do other work, come back; wait() with a timeout",
    "reconnect": "close the client, open a new one, attach by task id",
    "crash": "the submitting client dies mid-task; the work neither stops nor runs twice",
    "teammates": "A submits and shares the id, B watches, C waits and notifies",
    "cancel": "cancel a running task; its body stops",
    "failure": "a tool error (completed, isError) versus a protocol error (failed)",
    "input": "a task pauses in input_required; the client answers; it resumes",
    "limits": "at most N tasks run at once; submissions are rate-limited per client",
    "research": "a deep-research mock: one long task, then the same as composed tasks",
    "instant": "a plain tool for contrast: never a task",
    "all": "every pattern above, in this order, with a summary",
}
# Beyond one process: the stories start every process they need themselves.
STORIES = {
    "tenants": "bearer tokens: a task is found by its owner from another process, by nobody else",
    "restart": "Redis: SIGKILL the server mid-task, start it again, the task still finishes",
    "distributed": "Redis, a submit-only server, two workers, a client process per step",
}
BENCH = "measure: result lag, task overhead, throughput, compare, cold start"
DEFAULT_URL = "http://127.0.0.1:8000/mcp"


class _OneLineErrors(argparse.ArgumentParser):
    """An argparse parser whose errors are a single line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_finite(text: str) -> float:
    """Parse --scale: a number that is finite and greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _OneLineErrors(
        prog="tasks_demo.py",
        description="MCP background tasks on FastMCP 4, every pattern running for real.",
    )
    scale_help = "multiply every duration (0.1 runs ten times faster); default 1"
    parser.add_argument("--scale", type=positive_finite, default=1.0, help=scale_help)
    commands = parser.add_subparsers(dest="pattern", metavar="PATTERN", required=True)
    for name, summary in (PATTERNS | STORIES).items():
        command = commands.add_parser(name, help=summary, description=summary)
        # Accept --scale after the pattern too; SUPPRESS keeps the subparser
        # from overwriting a value given before the pattern.
        command.add_argument(
            "--scale", type=positive_finite, default=argparse.SUPPRESS, help=scale_help
        )
    bench = commands.add_parser("bench", help=BENCH, description=BENCH)
    bench.add_argument("--quick", action="store_true", help="a smaller run, in seconds")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")

    # The pieces the stories are made of, to run by hand in separate terminals.
    serve = commands.add_parser("serve", help="serve the tools over HTTP on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--backend", default="memory://",
                       help="memory:// (this process) or redis://HOST:PORT/DB (shared)")
    serve.add_argument("--no-worker", action="store_true",
                       help="accept tasks but leave running them to `worker` processes")
    serve.add_argument("--token", action="append", metavar="NAME=TOKEN",
                       help="require bearer tokens; repeat for each client "
                            "(or TASKS_DEMO_TOKENS=alice=...,bob=...)")
    worker = commands.add_parser("worker", help="run tasks for a server that shares a Redis")
    worker.add_argument("--backend", required=True, help="redis://HOST:PORT/DB")

    task = commands.add_parser("task", help="submit, status, watch, result, cancel: "
                                            "a client of a `serve` process, by task id")
    actions = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    client_help = {
        "submit": "submit a work task, print its id and exit",
        "status": "print a task's state and status message",
        "watch": "follow a task's progress until it ends",
        "result": "wait for a task's result and print it",
        "cancel": "cancel a task",
    }
    for name, summary in client_help.items():
        command = actions.add_parser(name, help=summary, description=summary)
        command.add_argument("--url", default=DEFAULT_URL)
        command.add_argument("--token", default=os.environ.get("TASKS_DEMO_TOKEN"),
                             help="bearer token (or TASKS_DEMO_TOKEN)")
        if name == "submit":
            command.add_argument("--label", default="job")
            command.add_argument("--seconds", type=positive_finite, default=10.0)
            command.add_argument("--steps", type=int, default=10)
        else:
            command.add_argument("task_id", help="the id, or - to read it from stdin "
                                                 "(task submit | task watch -)")
    args = parser.parse_args(argv)
    shared = getattr(args, "backend", "").startswith("redis")
    if args.pattern == "worker" and not shared:
        parser.error("a worker in its own process needs a shared backend: "
                     "--backend redis://HOST:PORT/DB")
    if args.pattern == "serve" and args.no_worker and not shared:
        parser.error("--no-worker needs a shared backend (--backend redis://...): "
                     "with memory:// nothing else could run the tasks")
    if args.pattern == "serve":
        args.tokens = {}
        from_env = os.environ.get("TASKS_DEMO_TOKENS")
        for pair in args.token or (from_env.split(",") if from_env else []):
            name, _, token = pair.partition("=")
            if not name or not token:
                parser.error(f"--token takes NAME=TOKEN, got {pair!r}")
            args.tokens[token] = name
    return args


CHILDREN: list = []  # processes a story started: none may outlive it


def exit_on_ctrl_c(signum, frame) -> None:
    """Ctrl-C: leave at once, without a traceback, with the usual status 130.

    The default would raise KeyboardInterrupt wherever the program happens to
    be, and then Docket's worker would shut down gracefully: it waits for every
    running task to finish first, as long as the longest one. Here the tasks
    live in memory and die with the process anyway, so there is nothing to
    wait for. Processes a story started go with it.
    """
    for child in CHILDREN:
        child.kill()
    sys.stdout.flush()
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[?25h")  # show the cursor a live dashboard hid
    sys.stderr.write("\ninterrupted\n")
    os._exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, exit_on_ctrl_c)
    ARGS = parse_args(sys.argv[1:])


# --------------------------------------------------------------------------
# 2. The server
# --------------------------------------------------------------------------

# The heavy imports, after the parser on purpose.
from fastmcp import Client, Context, FastMCP
from fastmcp.dependencies import CurrentContext
from fastmcp.exceptions import ToolError
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier
from fastmcp.server.middleware import Middleware
from fastmcp.server.middleware.rate_limiting import RateLimitError, TokenBucketRateLimiter
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension, ToolTask, call_tool_task
from fastmcp_tasks.client_models import (
    ClientCreateTaskResult,
    ClientGetTaskResult,
    GetTaskRequest,
    GetTaskRequestParams,
)
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT, ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

# How often a client should poll a task. The server sends this as the task's
# `pollIntervalMs`; FastMCP's client starts at 20 ms and doubles up to it. The
# library default is 5 s, which makes a 3 s task look done at ~5.1 s. 20 ms,
# the client's floor, means a flat 20 ms cadence: a finished task is seen
# ~20 ms late (median, `bench`), at the price of 50 tasks/get a second per
# waiting client. Right for a demo of second-long tasks, wasteful for
# hour-long ones, where seconds are the honest choice.
POLL_INTERVAL = timedelta(milliseconds=20)

TERMINAL = frozenset({"completed", "failed", "cancelled"})
REDELIVERY_TIMEOUT = timedelta(seconds=5)


def now() -> float:
    return time.perf_counter()


@dataclass
class Journal:
    """What the tool bodies really did, written on the server side.

    A client only sees what the protocol tells it. The demos read this journal
    to prove what a client cannot: the work ran while no client was connected,
    it ran exactly once, it stopped when cancelled, how many ran at once.
    """

    events: list[tuple[float, str, str]] = field(default_factory=list)

    def note(self, label: str, event: str) -> None:
        self.events.append((now(), label, event))

    def of(self, label: str, since: float = 0.0, until: float = math.inf) -> list[str]:
        return [e for t, lbl, e in self.events if lbl == label and since <= t <= until]

    def count(self, label: str, event: str) -> int:
        return self.of(label).count(event)

    def most_at_once(self) -> int:
        running = peak = 0
        for _, _, event in self.events:
            if event == "start":
                running += 1
                peak = max(peak, running)
            elif event in ("done", "cancelled"):
                running -= 1
        return peak

    async def wait_for(self, label: str, event: str, timeout: float) -> None:
        deadline = now() + timeout
        while event not in self.of(label):
            if now() > deadline:
                raise TimeoutError(f"{label} never reached {event!r}")
            await asyncio.sleep(0.005)


class SubmissionLimit(Middleware):
    """Rate-limit tool calls (task submissions) per client with a token bucket.

    Only `tools/call` is limited: polling a task you already own must never be
    refused. Clients here are anonymous, so they are told apart by the
    `client_id` they put in the request's `_meta` (FastMCP's `ctx.client_id`);
    behind authentication you would key on the access token instead.
    """

    def __init__(self, burst: int, per_second: float):
        self.buckets = defaultdict(lambda: TokenBucketRateLimiter(burst, per_second))

    async def on_call_tool(self, context, call_next):
        client = context.fastmcp_context.client_id or "anonymous"
        if not await self.buckets[client].consume():
            raise RateLimitError(f"rate limit: {client} submits too fast")
        return await call_next(context)


APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "approver": {"type": "string"}},
    "required": ["approved", "approver"],
}


def build_server(
    journal: Journal | None = None,
    *,
    backend: str | None = None,
    queue: str | None = None,
    concurrency: int = 10,
    poll_interval: timedelta = POLL_INTERVAL,
    submission_limit: SubmissionLimit | None = None,
    tokens: dict[str, str] | None = None,
) -> FastMCP:
    """A FastMCP server with background tasks and the demo's tools.

    `backend` is where tasks live: `memory://` (this process only) or
    `redis://host:port/db` (shared by every process that names it). `queue`
    names the Docket queue; two servers on one backend with the same queue
    name share their tasks. Left out, both come from the FASTMCP_DOCKET_URL and
    FASTMCP_DOCKET_NAME environment variables (default `memory://`,
    `fastmcp`). `concurrency` is how many tasks this process runs at once; the
    rest wait, queued (0: accept tasks but leave the running to workers).
    `tokens` maps bearer tokens to client names and turns authentication on.
    """
    journal = journal if journal is not None else Journal()
    auth = None
    if tokens:
        auth = StaticTokenVerifier({token: {"client_id": name} for token, name in tokens.items()})
    mcp = FastMCP("tasks-demo", auth=auth)
    mcp.add_extension(
        TasksExtension(
            url=backend,
            name=queue,
            concurrency=concurrency,
            # A task whose worker died is handed to another worker after this
            # long (Docket's default is 5 minutes). Live workers renew their
            # claim four times per period, so long tasks are not run twice;
            # but a worker frozen for longer than this would have its task
            # taken over while it still runs.
            redelivery_timeout=REDELIVERY_TIMEOUT,
        )
    )
    if submission_limit is not None:
        mcp.add_middleware(submission_limit)
    # `optional`: a tool runs as a background task when the client asks for
    # one (FastMCP's client always does once fastmcp_tasks is imported) and as
    # a plain call for clients that don't speak the tasks extension.
    task = TaskConfig(mode="optional", poll_interval=poll_interval)

    @mcp.tool(task=task)
    async def work(
        label: str, seconds: float, steps: int = 5, ctx: Context = CurrentContext()
    ) -> dict:
        """Work for `seconds` in equal `steps`, reporting progress after each."""
        journal.note(label, "start")
        # tasks/get carries only a status message: the numbers given to
        # report_progress stay in Docket. So the text says it all, and it is
        # also what tells a running task from a queued one (both are
        # `working`; only a started task has a message).
        await ctx.report_progress(0, steps, f"{label}: started (0%)")
        started = now()
        try:
            for step in range(1, steps + 1):
                # Sleep until this step's deadline rather than for a fixed
                # slice, so the ~2 ms each progress report costs does not
                # stretch the work beyond `seconds`.
                await asyncio.sleep(started + step * seconds / steps - now())
                journal.note(label, f"step {step}")
                percent = 100 * step // steps
                message = f"{label}: step {step}/{steps} ({percent}%)"
                await ctx.report_progress(step, steps, message)
        except asyncio.CancelledError:
            journal.note(label, "cancelled")
            raise
        journal.note(label, "done")
        # `pid` says which process did the work: with Redis and workers, not
        # necessarily the one that accepted the task.
        return {"label": label, "seconds": seconds, "steps": steps, "pid": os.getpid()}

    @mcp.tool  # no task=...: a plain tool is never run as a task
    def instant(text: str) -> str:
        """Answer immediately."""
        return text.upper()

    @mcp.tool(task=task)
    async def fail(kind: Literal["bad_input", "bug", "backend_down"]) -> str:
        """Fail in one of the two ways a task can fail.

        A tool error (ToolError, or any other exception such as ValueError)
        is the tool's answer: the task ends `completed` with an `isError`
        result, as a plain call would. A protocol error (MCPError) means the
        server could not produce an answer at all: the task ends `failed`.
        """
        if kind == "bad_input":
            raise ToolError("the input was rejected by the tool")
        if kind == "bug":
            raise ValueError("division by zero in step 3")
        raise MCPError(code=-32603, message="the storage backend is unreachable")

    @mcp.tool(task=task)
    async def approve(
        action: str, ctx: Context = CurrentContext()
    ) -> str | InputRequiredResult:
        """Ask the client to approve `action`, then report the decision.

        `ctx.elicit()` cannot work inside a task: no request is open to carry
        the question. Instead the body *returns* an InputRequiredResult. The
        task parks in `input_required`, the worker is freed, and when the
        client answers (tasks/update) the body runs again from the top, this
        time with the answers in `ctx.input_responses`.
        """
        answers = ctx.input_responses
        if answers is None:
            journal.note(action, "asked")
            question = ElicitRequestFormParams(
                message=f"Approve {action!r}?", requested_schema=APPROVAL_SCHEMA
            )
            return InputRequiredResult(
                input_requests={"decision": ElicitRequest(params=question)}
            )
        journal.note(action, "resumed")
        answer = answers["decision"]
        content = answer.content or {}
        if answer.action == "accept" and content.get("approved"):
            return f"{action}: approved by {content.get('approver')}"
        return f"{action}: declined"

    # The deep-research mock. The same three steps serve as one long task
    # (`deep_research`) and as tools a client can compose itself.

    async def plan_queries(topic: str, sources: int, seconds: float) -> list[str]:
        await asyncio.sleep(seconds)
        angles = ["background", "recent results", "open problems", "critiques"]
        return [f"{topic}: {angles[i % len(angles)]} #{i + 1}" for i in range(sources)]

    async def search_source(query: str, seconds: float) -> dict:
        journal.note(query, "start")
        await asyncio.sleep(seconds)
        journal.note(query, "done")
        return {"query": query, "finding": f"3 sources agree on '{query}'"}

    async def analyze_findings(topic: str, findings: list[dict], seconds: float) -> dict:
        await asyncio.sleep(seconds)
        return {
            "topic": topic,
            "sources": len(findings),
            "summary": f"{len(findings)} findings on {topic}, all consistent",
            "findings": [f["finding"] for f in findings],
        }

    @mcp.tool(task=task)
    async def deep_research(
        topic: str, sources: int = 3, seconds: float = 2.0, ctx: Context = CurrentContext()
    ) -> dict:
        """Plan, search `sources` in parallel, analyse: one task, `seconds` long.

        A quarter of the time plans, half searches, a quarter analyses.
        """
        await ctx.report_progress(0, 3, f"planning {sources} searches")
        queries = await plan_queries(topic, sources, seconds / 4)
        await ctx.report_progress(1, 3, f"searching {sources} sources in parallel")
        findings = await asyncio.gather(*(search_source(q, seconds / 2) for q in queries))
        await ctx.report_progress(2, 3, "analysing findings")
        return await analyze_findings(topic, findings, seconds / 4)

    @mcp.tool(task=task)
    async def plan(topic: str, sources: int, seconds: float) -> list[str]:
        """Research step 1: the queries to run."""
        return await plan_queries(topic, sources, seconds)

    @mcp.tool(task=task)
    async def search(query: str, seconds: float) -> dict:
        """Research step 2: one search."""
        return await search_source(query, seconds)

    @mcp.tool(task=task)
    async def analyze(topic: str, findings: list[dict], seconds: float) -> dict:
        """Research step 3: the report."""
        return await analyze_findings(topic, findings, seconds)

    return mcp


# For `fastmcp run tasks_demo.py:mcp` and any other MCP client.
mcp = build_server()


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[FastMCP, Journal]]:
    """Run a fresh server, on its own queue, for the length of one demo.

    Over the in-memory transport a server's lifespan (and with it the Docket
    worker that runs tasks) starts with the first client connection and stops
    with the last. A deployed server keeps running while clients come and go.
    To act that out, we hold the lifespan open ourselves, with the same call
    the transport makes, so tasks keep running between clients.
    """
    journal = Journal()
    queue = f"tasks-demo-{secrets.token_hex(4)}"
    server = build_server(journal, backend="memory://", queue=queue, **options)
    async with server._lifespan_manager():
        yield server, journal


# --------------------------------------------------------------------------
# 3. Client helpers
# --------------------------------------------------------------------------


async def attach(client: Client, task_id: str, tool_name: str) -> ToolTask:
    """A task handle for an id, on any client: "attach to a task".

    fastmcp has no such call; a ToolTask only comes back from call_tool_task.
    But a handle is just (client, tool name, the server's record of the task),
    so we ask the server for the record with tasks/get and build one. An
    unknown or expired id fails here, with the server's "not found".
    """
    request = GetTaskRequest(params=GetTaskRequestParams(task_id=task_id))
    record = await client.session.send_request(request, ClientGetTaskResult)
    created = ClientCreateTaskResult.model_validate(
        {**record.model_dump(by_alias=True, exclude={"result", "error", "input_requests"}),
         "resultType": "task"}
    )
    return ToolTask(client, tool_name, created)


def state_of(status: ClientGetTaskResult) -> str:
    """The task's status, with `working` split into queued and running."""
    if status.status == "working" and status.status_message is None:
        return "working (queued)"
    return status.status


@dataclass
class Sample:
    """One tasks/get, as a client saw it."""

    at: float  # seconds since the pattern started
    state: str
    message: str | None


def past_step(step: int) -> Callable[[ClientGetTaskResult], bool]:
    """True once a task's status message reports `step` or a later one."""
    def check(status: ClientGetTaskResult) -> bool:
        found = re.search(r"step (\d+)/", status.status_message or "")
        return found is not None and int(found[1]) >= step
    return check


def transitions(samples: list[Sample]) -> list[str]:
    """The states seen, in order, without repeats."""
    states: list[str] = []
    for sample in samples:
        if not states or states[-1] != sample.state:
            states.append(sample.state)
    return states


async def follow(
    task: ToolTask,
    t0: float,
    *,
    until: Callable[[ClientGetTaskResult], bool] = lambda s: False,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Poll a task at the server's advertised interval, recording what we see.

    Stops at a terminal state, or earlier once `until` holds.
    """
    samples = []
    while True:
        status = await task.status()
        sample = Sample(now() - t0, state_of(status), status.status_message)
        samples.append(sample)
        if on_sample:
            on_sample(sample)
        if status.status in TERMINAL or until(status):
            return samples
        await asyncio.sleep((status.poll_interval_ms or 1000) / 1000)


@dataclass
class Report:
    """What one pattern observed. The presentation layer only prints it."""

    pattern: str
    proved: str  # the claim, in one sentence
    ideal: float  # seconds the work needs if nothing is wasted
    took: float  # seconds measured
    checks: dict[str, bool]  # the claim, broken into things that were checked
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return all(self.checks.values())


# --------------------------------------------------------------------------
# 4. The patterns, in the order a learner meets them
# --------------------------------------------------------------------------


async def compare(scale: float) -> Report:
    """The same 3 s + 2 s + 1 s of work, three ways."""
    work = {"A": 3 * scale, "B": 2 * scale, "C": 1 * scale}
    args = [{"label": label, "seconds": s} for label, s in work.items()]
    t0 = now()
    async with serving() as (server, _):
        # A client that does not negotiate the tasks extension (here: an older,
        # handshake-era connection) gets plain foreground calls: the request
        # stays open until the tool returns. Optional-mode tools allow that.
        async with Client(server, mode="legacy") as plain:
            start = now()
            sequential = [(await plain.call_tool("work", a)).data for a in args]
            sequential_s = now() - start

            start = now()
            calls = [plain.call_tool("work", a) for a in args]
            gathered = [r.data for r in await asyncio.gather(*calls)]
            gather_s = now() - start

        async with Client(server) as client:
            start = now()
            tasks = await asyncio.gather(*(call_tool_task(client, "work", a) for a in args))
            submitted_s = now() - start
            background = [r.data for r in await asyncio.gather(*tasks)]
            tasks_s = now() - start

    expected = [{**a, "steps": 5, "pid": os.getpid()} for a in args]
    return Report(
        pattern="compare",
        proved="gather and tasks are both concurrent; tasks add lifecycle, not speed",
        ideal=(6 + 3 + 3) * scale,
        took=now() - t0,
        checks={
            "every way returned every result": sequential == gathered == background == expected,
            "gather beats sequential": gather_s < sequential_s,
            "tasks beat sequential": tasks_s < sequential_s,
        },
        facts={
            "sequential_s": sequential_s,
            "gather_s": gather_s,
            "tasks_s": tasks_s,
            "submit_all_s": submitted_s,
            "speedup_gather": sequential_s / gather_s,
            "speedup_tasks": sequential_s / tasks_s,
            "tasks_over_gather": tasks_s / gather_s,
        },
    )


async def direct_await(scale: float) -> Report:
    """The simplest use: submit, then await the handle like a coroutine."""
    t0 = now()
    async with serving() as (server, _), Client(server) as client:
        task = await call_tool_task(client, "work", {"label": "A", "seconds": 1 * scale})
        result = await task  # shorthand for `await task.result()`
        final = await task.status()
    return Report(
        pattern="await",
        proved="a task handle can be awaited like any coroutine",
        ideal=1 * scale,
        took=now() - t0,
        checks={"result is the input": result.data["label"] == "A",
                "task ended completed": final.status == "completed"},
        facts={"task_id": task.task_id, "result": result.data, "state": final.status,
               # What the server tells every client about the task:
               "poll_every_ms": final.poll_interval_ms,
               "result_kept_for_min": final.ttl_ms // 60_000},
    )


async def many_at_once(scale: float, count: int = 20) -> Report:
    """Submit `count` tasks, then gather them all."""
    seconds = 1 * scale
    t0 = now()
    async with serving(concurrency=count) as (server, journal), Client(server) as client:
        start = now()
        tasks = await asyncio.gather(*(
            call_tool_task(client, "work", {"label": f"T{i}", "seconds": seconds, "steps": 1})
            for i in range(count)
        ))
        submit_s = now() - start
        results = await asyncio.gather(*tasks)
        all_s = now() - start
    labels = [r.data["label"] for r in results]
    expected = [f"T{i}" for i in range(count)]
    runs = [journal.count(label, "done") for label in expected]
    return Report(
        pattern="many",
        proved=f"{count} tasks run side by side and each result comes back exactly once",
        ideal=seconds,
        took=now() - t0,
        checks={"results match inputs, in order": labels == expected,
                "no result lost or doubled": len(set(labels)) == count,
                "each body ran once": runs == [1] * count},
        facts={"tasks": count, "submit_all_s": submit_s, "all_done_s": all_s,
               "unique_task_ids": len({t.task_id for t in tasks})},
    )


async def poll_dashboard(
    scale: float, on_update: Callable[[dict[str, Sample]], None] | None = None
) -> Report:
    """Watch several tasks at once until every one is terminal."""
    work = {"A": 3 * scale, "B": 2 * scale, "C": 1 * scale}
    t0 = now()
    latest: dict[str, Sample] = {}

    def record(label: str) -> Callable[[Sample], None]:
        def on_sample(sample: Sample) -> None:
            latest[label] = sample
            if on_update:
                on_update(dict(latest))
        return on_sample

    async with serving() as (server, _), Client(server) as client:
        tasks = {
            label: await call_tool_task(client, "work", {"label": label, "seconds": s})
            for label, s in work.items()
        }
        histories = await asyncio.gather(
            *(follow(task, t0, on_sample=record(label)) for label, task in tasks.items())
        )
    seen = {label: transitions(h) for label, h in zip(tasks, histories)}
    steps_seen = {  # the client reads progress from the status message
        label: [int(step) for s in h for step in re.findall(r"step (\d+)/", s.message or "")]
        for label, h in zip(tasks, histories)
    }
    done_at = {label: h[-1].at for label, h in zip(tasks, histories)}
    return Report(
        pattern="poll",
        proved="a client can watch every task's state and progress while it runs",
        ideal=max(work.values()),
        took=now() - t0,
        checks={"every task ended completed": all(s[-1] == "completed" for s in seen.values()),
                "progress was seen while working": all(steps_seen.values()),
                "shortest finished first": done_at["C"] < done_at["B"] < done_at["A"]},
        facts={"transitions": seen, "done_at_s": done_at,
               "steps_seen": {k: list(dict.fromkeys(v)) for k, v in steps_seen.items()}},
    )


async def fire_and_forget(scale: float) -> Report:
    """Submit, get on with other work, and come back for the result."""
    seconds = 2 * scale
    t0 = now()
    async with serving() as (server, _), Client(server) as client:
        start = now()
        task = await call_tool_task(client, "work", {"label": "report", "seconds": seconds})
        submitted_s = now() - start

        # Meanwhile the client is free: other calls on the same connection.
        other_work = [(await client.call_tool("instant", {"text": f"job {i}"})).data
                      for i in range(5)]
        state_meanwhile = (await task.status()).status

        try:  # a bounded wait that is too short gives up...
            await task.wait(timeout=seconds / 4)
            timed_out = False
        except TimeoutError:
            timed_out = True
        except MCPError as error:  # ...also when time runs out mid-request
            if error.error.code != REQUEST_TIMEOUT:
                raise
            timed_out = True
        status_after_timeout = (await task.status()).status

        final = await task.wait(timeout=10 * seconds + 5)  # ...a long enough one doesn't
        came_back_s = now() - start
        result = await task.result()
    return Report(
        pattern="fire-and-forget",
        proved="submitting returns at once; the client is free until it wants the result",
        ideal=seconds,
        took=now() - t0,
        checks={"submit returned before the work was done": submitted_s < seconds,
                "other work was done while it ran": len(other_work) == 5
                and state_meanwhile == "working",
                "short wait timed out, task kept working": timed_out
                and status_after_timeout == "working",
                "result arrived": final.status == "completed"
                and result.data["label"] == "report"},
        facts={"submit_s": submitted_s, "other_work_meanwhile": other_work,
               "task_state_meanwhile": state_meanwhile,
               "short_wait_timed_out": timed_out, "result_at_s": came_back_s},
    )


async def reconnect(scale: float) -> Report:
    """Close the client mid-task, come back on a new one, attach by id."""
    seconds = 2 * scale
    t0 = now()
    async with serving() as (server, journal):
        async with Client(server) as first:
            task = await call_tool_task(
                first, "work", {"label": "R", "seconds": seconds, "steps": 10})
            task_id = task.task_id  # the only thing we keep
            before = await follow(task, t0, until=past_step(2))
        closed_at = now()
        await asyncio.sleep(seconds / 2)  # nobody is connected now
        reopened_at = now()
        async with Client(server) as second:
            task = await attach(second, task_id, "work")
            after = await follow(task, t0)
            result = await task.result()
    steps_while_away = [e for e in journal.of("R", closed_at, reopened_at) if e.startswith("step")]
    return Report(
        pattern="reconnect",
        proved="a task keeps running with no client connected; any client can resume it by id",
        ideal=seconds,
        took=now() - t0,
        checks={"work ran while no client was connected": len(steps_while_away) > 0,
                "progress continued on the new client": transitions(after)[-1] == "completed",
                "result is the input": result.data["label"] == "R",
                "ran once": journal.count("R", "start") == 1},
        facts={"task_id": task_id, "last_seen_before_closing": before[-1].message,
               "steps_while_away": steps_while_away,
               "first_seen_after_reopening": after[0].message,
               "transitions_after": transitions(after)},
    )


async def crash(scale: float) -> Report:
    """The submitting client dies without a goodbye; a new one gets the result."""
    seconds = 2 * scale
    t0 = now()
    saved: dict[str, str] = {}  # stands in for the disk the id was written to

    async def doomed_client(server: FastMCP) -> None:
        async with Client(server) as client:
            task = await call_tool_task(client, "work", {"label": "K", "seconds": seconds})
            saved["task_id"] = task.task_id
            await task.result()  # never returns: this client dies first

    async with serving() as (server, journal):
        victim = asyncio.create_task(doomed_client(server))
        await journal.wait_for("K", "step 1", timeout=5 + seconds)
        victim.cancel()  # the crash: no tasks/cancel is sent, nothing is awaited
        crashed_at = now()
        await asyncio.gather(victim, return_exceptions=True)
        async with Client(server) as survivor:
            task = await attach(survivor, saved["task_id"], "work")
            result = await task.result()
    return Report(
        pattern="crash",
        proved="a client crash neither stops the work nor makes it run twice",
        ideal=seconds,
        took=now() - t0,
        checks={"result recovered by a new client": result.data["label"] == "K",
                "work ran exactly once": journal.count("K", "start") == 1
                and journal.count("K", "done") == 1,
                "the crash came mid-task": "done" not in journal.of("K", until=crashed_at)},
        facts={"steps_before_crash": journal.of("K", until=crashed_at), "result": result.data,
               "body_runs": journal.count("K", "start")},
    )


async def teammates(scale: float) -> Report:
    """A submits and shares only the task id; B watches; C waits and notifies."""
    seconds = 2 * scale
    t0 = now()
    async with serving() as (server, _):
        async with Client(server) as alice, Client(server) as bob, Client(server) as carol:
            task = await call_tool_task(alice, "work", {"label": "tests", "seconds": seconds})
            shared_id = task.task_id  # pasted into the team chat

            async def bob_watches() -> list[Sample]:
                return await follow(await attach(bob, shared_id, "work"), t0)

            async def carol_waits() -> str:
                handle = await attach(carol, shared_id, "work")
                final = await handle.wait(timeout=10 * seconds + 5)
                return f"notify #team: task {shared_id[:8]}… is {final.status}"

            watched, notification = await asyncio.gather(bob_watches(), carol_waits())
            fetched = [
                (await task.result()).data,
                (await (await attach(bob, shared_id, "work")).result()).data,
                (await (await attach(carol, shared_id, "work")).result()).data,
            ]
    progress = sorted({s.message for s in watched if s.message and "step" in s.message})
    return Report(
        pattern="teammates",
        proved="anyone with the task id can watch it, wait for it and fetch the same result",
        ideal=seconds,
        took=now() - t0,
        checks={"B saw progress": len(progress) > 0,
                "C was notified of completion": notification.endswith("completed"),
                "all three fetched an identical result": fetched[0] == fetched[1] == fetched[2]},
        facts={"bob_saw": progress, "carol_said": notification, "result": fetched[0]},
    )


async def cancel(scale: float) -> Report:
    """Cancel a running task and show that its body stopped."""
    seconds = 2 * scale
    t0 = now()
    async with serving() as (server, journal), Client(server) as client:
        task = await call_tool_task(
            client, "work", {"label": "X", "seconds": seconds, "steps": 10})
        await follow(task, t0, until=past_step(2))
        await task.cancel()
        cancelled_at = now()
        after = await follow(task, t0)
        # The body's own record that it was interrupted:
        await journal.wait_for("X", "cancelled", timeout=5)
        try:
            await task.result()
            raised = None
        except ToolError as error:
            raised = str(error)
    steps = [e for e in journal.of("X") if e.startswith("step")]
    steps_after = [e for e in journal.of("X", since=cancelled_at) if e.startswith("step")]
    return Report(
        pattern="cancel",
        proved="cancel stops a running task's body, and the task reports cancelled",
        ideal=seconds * 0.2,
        took=now() - t0,
        checks={"task ended cancelled": transitions(after)[-1] == "cancelled",
                "body was interrupted": "cancelled" in journal.of("X"),
                "body never finished": "done" not in journal.of("X"),
                "result() raises": raised is not None},
        facts={"steps_done": len(steps), "steps_after_cancel": len(steps_after),
               "body_events": journal.of("X"), "result_raised": raised},
    )


async def failure(scale: float) -> Report:
    """A tool error is an answer; a protocol error is a failure."""
    t0 = now()
    outcomes = {}
    async with serving() as (server, _), Client(server) as client:
        for kind in ("bad_input", "bug", "backend_down"):
            task = await call_tool_task(client, "fail", {"kind": kind}, raise_on_error=False)
            final = await task.wait(timeout=10)
            error_text = (final.result or {}).get("content", [{}])[0].get("text")
            outcomes[kind] = {
                "state": final.status,
                "is_error_result": bool((final.result or {}).get("isError")),
                "message": error_text or (final.error or {}).get("message"),
                "error_code": (final.error or {}).get("code"),
            }
    return Report(
        pattern="failure",
        proved="a raised tool error ends completed with isError; only a protocol error ends failed",
        ideal=0.0,
        took=now() - t0,
        checks={"ToolError → completed, isError": outcomes["bad_input"]["state"] == "completed"
                and outcomes["bad_input"]["is_error_result"],
                "ValueError → completed, isError": outcomes["bug"]["state"] == "completed"
                and outcomes["bug"]["is_error_result"],
                "MCPError → failed with its code": outcomes["backend_down"]["state"] == "failed"
                and outcomes["backend_down"]["error_code"] == -32603},
        facts=outcomes,
    )


async def ask_for_input(scale: float) -> Report:
    """A task parks in input_required; the elicitation handler answers it."""
    asked: list[str] = []

    async def approver(message, response_type, params, context) -> dict:
        asked.append(message)
        await asyncio.sleep(0.5 * scale)  # a human takes a moment to decide
        return {"approved": True, "approver": "dana"}

    t0 = now()
    async with serving() as (server, journal), Client(server, elicitation_handler=approver) as client:
        task = await call_tool_task(client, "approve", {"action": "deploy v2"})
        before = await follow(task, t0, until=lambda s: s.status == "input_required")
        result = await task.result()  # answers through the elicitation handler
        final = await task.status()
    seen = transitions(before) + [final.status]
    return Report(
        pattern="input",
        proved="a task can stop to ask the client a question and resume with the answer",
        ideal=0.5 * scale,
        took=now() - t0,
        checks={"parked in input_required": "input_required" in seen,
                "the handler saw the question": asked == ["Approve 'deploy v2'?"],
                "resumed with the answer": result.data == "deploy v2: approved by dana",
                "body ran twice, once per leg": journal.of("deploy v2") == ["asked", "resumed"]},
        facts={"transitions": seen, "question": asked, "result": result.data},
    )


async def limits(scale: float) -> Report:
    """The server runs at most 2 tasks at once and limits submissions per client."""
    seconds, concurrency, burst = 0.5 * scale, 2, 4
    accepted: dict[str, ToolTask] = {}
    rejected: list[str] = []
    t0 = now()
    # Refill is negligible over the burst, so exactly `burst` calls get in.
    limit = SubmissionLimit(burst=burst, per_second=0.01)
    async with serving(concurrency=concurrency, submission_limit=limit) as (server, journal):
        async with Client(server) as client:
            start = now()
            for who, count in (("alice", 3), ("bob", 6)):
                for i in range(count):
                    label = f"{who}-{i}"
                    args = {"label": label, "seconds": seconds, "steps": 1}
                    try:
                        accepted[label] = await call_tool_task(
                            client, "work", args, meta={"client_id": who})
                    except MCPError as error:
                        rejected.append(f"{label}: {error}")
            histories = await asyncio.gather(*(follow(t, start) for t in accepted.values()))
            drained_s = now() - start
            results = [(await t.result()).data["label"] for t in accepted.values()]
    # When the client first saw each task out of the queue: the waves. (A
    # short task may run and finish between two polls, so "out of the queue"
    # is any state but queued.)
    started_at = sorted(next(s.at for s in h if s.state != "working (queued)")
                        for h in histories)
    seen_queued = sum("working (queued)" in transitions(h) for h in histories)
    waves = math.ceil(len(accepted) / concurrency)
    return Report(
        pattern="limits",
        proved="the server queues work beyond its concurrency and refuses a client that floods it",
        ideal=waves * seconds,
        took=now() - t0,
        checks={"never more than 2 ran at once": journal.most_at_once() == concurrency,
                "the rest waited, queued": seen_queued >= len(accepted) - concurrency,
                "bob was cut off after 4": [r.split(":")[0] for r in rejected] == ["bob-4", "bob-5"],
                "alice was not affected": not any(r.startswith("alice") for r in rejected),
                "every accepted task ran": results == list(accepted)},
        facts={"accepted": list(accepted), "rejected": rejected,
               "most_at_once": journal.most_at_once(), "seen_queued": seen_queued,
               "started_at_s": started_at, "drained_s": drained_s},
    )


async def research(scale: float) -> Report:
    """Deep research: one long task fire-and-forget, then composed from steps."""
    seconds, sources = 2 * scale, 3
    t0 = now()
    async with serving() as (server, journal):
        start = now()
        async with Client(server) as laptop:
            task = await call_tool_task(
                laptop, "deep_research",
                {"topic": "solid-state batteries", "sources": sources, "seconds": seconds})
            phases = [s.message for s in await follow(task, t0) if s.message]
            on_laptop = (await task.result()).data
        async with Client(server) as phone:  # later, somewhere else
            on_phone = (await (await attach(phone, task.task_id, "deep_research")).result()).data
        one_task_s = now() - start

        # The same work composed by the client: each step is its own task.
        start = now()
        async with Client(server) as client:
            topic = "perovskite cells"
            plan_task = await call_tool_task(
                client, "plan", {"topic": topic, "sources": sources, "seconds": seconds / 4})
            queries = (await plan_task).data
            searches = [await call_tool_task(client, "search", {"query": q, "seconds": seconds / 2})
                        for q in queries]
            findings = [(await s).data for s in searches]
            analysis = await call_tool_task(
                client, "analyze", {"topic": topic, "findings": findings, "seconds": seconds / 4})
            composed = (await analysis).data
        composed_s = now() - start
    distinct_phases = list(dict.fromkeys(phases))
    return Report(
        pattern="research",
        proved="a long multi-step job runs as one task or as composed tasks, in the same time",
        ideal=2 * seconds,
        took=now() - t0,
        checks={"phases were visible": len(distinct_phases) >= 3,
                "laptop and phone got the same report": on_laptop == on_phone,
                "report covers every source": on_laptop["sources"] == sources
                and composed["sources"] == sources,
                "searches ran in parallel": journal.most_at_once() == sources},
        facts={"phases": distinct_phases, "one_task_s": one_task_s, "composed_s": composed_s,
               "summary": on_laptop["summary"]},
    )


async def instant(scale: float) -> Report:
    """A plain tool, for contrast: it answers in the call, never as a task."""
    t0 = now()
    async with serving() as (server, _), Client(server) as client:
        start = now()
        answer = (await client.call_tool("instant", {"text": "hello"})).data
        call_ms = (now() - start) * 1000
        try:
            await call_tool_task(client, "instant", {"text": "hello"})
            refused = None
        except ToolError as error:
            refused = str(error).split(":")[0]
    return Report(
        pattern="instant",
        proved="tools without task=... answer inline; asking for a task handle is refused",
        ideal=0.0,
        took=now() - t0,
        checks={"answered inline": answer == "HELLO",
                "call_tool_task refused it": refused is not None},
        facts={"answer": answer, "call_ms": call_ms, "call_tool_task_said": refused},
    )


LEARNING_ORDER: dict[str, Callable[..., Any]] = {
    "compare": compare,
    "await": direct_await,
    "many": many_at_once,
    "poll": poll_dashboard,
    "fire-and-forget": fire_and_forget,
    "reconnect": reconnect,
    "crash": crash,
    "teammates": teammates,
    "cancel": cancel,
    "failure": failure,
    "input": ask_for_input,
    "limits": limits,
    "research": research,
    "instant": instant,
}


# --------------------------------------------------------------------------
# 5. Beyond one process: HTTP, Redis, workers, tenants
# --------------------------------------------------------------------------
# The same server over streamable HTTP. With `memory://` its tasks outlive
# clients but not the server process; with Redis they outlive the server
# too, and worker processes can run them. Run the pieces by hand (`serve`,
# `worker`, `task submit|status|watch|result|cancel`) or let a story start
# them all.


class DemoError(Exception):
    """Something to report in one line, without a traceback."""


def http_status(url: str, token: str | None) -> int:
    """Ask the server once more, over plain HTTP, how it answers this token.

    The MCP client reports every HTTP error as "Server returned an error
    response"; the status code is what tells a bad token from a broken server.
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@asynccontextmanager
async def remote(url: str, token: str | None) -> AsyncIterator[Client]:
    """A client of a server in another process, whose failures read as one line."""
    try:
        async with Client(url, auth=token) as client:
            yield client
    except MCPError as error:
        if "not found" in str(error):
            raise DemoError(f"{error}: the id is unknown, expired (results are kept "
                            "15 minutes) or another tenant's; check it and --token") from None
        status = await asyncio.to_thread(http_status, url, token)
        if status in (401, 403):
            raise DemoError(f"{url} refused the token (HTTP {status}): check --token") from None
        raise DemoError(f"{url}: {error}") from None
    except (OSError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "failed to connect" not in str(error):
            raise
        raise DemoError(f"cannot reach {url} ({error}): is `tasks_demo.py serve` "
                        "running there? check --url") from None


async def require_redis(url: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(url, socket_connect_timeout=2)
    try:
        await redis.ping()
    except Exception as error:
        raise DemoError(f"cannot reach Redis at {url} ({error}): start redis-server "
                        "or check --backend") from None
    finally:
        await redis.aclose()


async def serve(port: int, backend: str, worker: bool, tokens: dict[str, str]) -> None:
    """Serve the tools over streamable HTTP until stopped."""
    if backend.startswith("redis"):
        await require_redis(backend)
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise DemoError(f"port {port} is in use: choose another --port")
    server = build_server(backend=backend, queue="tasks-demo",
                          concurrency=10 if worker else 0, tokens=tokens)
    print(f"serving http://127.0.0.1:{port}/mcp pid={os.getpid()} backend={backend} "
          f"worker={'yes' if worker else 'no'} auth={'tokens' if tokens else 'none'}",
          flush=True)
    await server.run_http_async(host="127.0.0.1", port=port, show_banner=False,
                                log_level="warning")


async def worker(backend: str) -> None:
    """Run tasks from a shared Redis backend, for whichever server accepted them.

    The same as fastmcp-tasks' own worker command:
    FASTMCP_DOCKET_URL=redis://... python -m fastmcp_tasks.worker_cli worker tasks_demo.py:mcp
    """
    await require_redis(backend)
    server = build_server(backend=backend, queue="tasks-demo")
    async with server._lifespan_manager():  # the lifespan runs the Docket worker
        print(f"worker pid={os.getpid()} backend={backend}", flush=True)
        await asyncio.Event().wait()


async def task_command(args: argparse.Namespace) -> str:
    """`task submit|status|watch|result|cancel`: what to print."""
    if getattr(args, "task_id", None) == "-":
        args.task_id = (await asyncio.to_thread(sys.stdin.readline)).strip()
    async with remote(args.url, args.token) as client:
        if args.action == "submit":
            work = {"label": args.label, "seconds": args.seconds, "steps": args.steps}
            return (await call_tool_task(client, "work", work)).task_id
        task = await attach(client, args.task_id, "work")
        if args.action == "status":
            status = await task.status()
            return f"{state_of(status)} {status.status_message or ''}".strip()
        if args.action == "watch":
            last_seen: list[tuple] = [()]

            def show_change(sample: Sample) -> None:  # one line per change, not per poll
                if (sample.state, sample.message) != last_seen[0]:
                    last_seen[0] = (sample.state, sample.message)
                    print(f"{sample.at:6.2f} s  {sample.state:16}  {sample.message or ''}",
                          flush=True)
            return " → ".join(transitions(await follow(task, now(), on_sample=show_change)))
        if args.action == "cancel":
            await task.cancel()
            return state_of(await task.status())
        final = await task.wait(timeout=24 * 3600)  # result
        if final.status != "completed":
            raise DemoError(f"task {args.task_id} ended {final.status}: "
                            f"{final.status_message or final.error or ''}")
        return json.dumps(final.result.get("structuredContent") or final.result["content"])


# Stories: this program starts the processes, talks to them as a client, and
# kills every one of them at the end, on failure or on Ctrl-C.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Child:
    """A process a story started: its output collected, its end guaranteed."""

    def __init__(self, name: str, *command: str):
        self.name, self.lines = name, []
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        CHILDREN.append(self.process)
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    @classmethod
    def demo(cls, name: str, *args: str) -> Child:
        return cls(name, sys.executable, os.path.abspath(__file__), *args)

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    async def expect(self, text: str, timeout: float = 30) -> str:
        deadline = now() + timeout
        while now() < deadline:
            exited = self.process.poll() is not None
            if exited:
                await asyncio.to_thread(self._reader.join)  # read what it left
            for line in self.lines:
                if text in line:
                    return line
            if exited:
                raise DemoError(f"{self.name} exited: {' / '.join(self.lines[-3:])}")
            await asyncio.sleep(0.02)
        raise DemoError(f"{self.name} did not print {text!r} within {timeout:.0f} s")

    async def finish(self, timeout: float = 60) -> str:
        """Wait for the process to exit; its last line, or an error."""
        code = await asyncio.to_thread(self.process.wait, timeout)
        await asyncio.to_thread(self._reader.join)  # every line read, to the end
        if code != 0:
            raise DemoError(f"{self.name} failed: {' / '.join(self.lines[-3:])}")
        return self.lines[-1] if self.lines else ""

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


async def client_process(name: str, *args: str) -> Child:
    """Run one `task ...` command in a process of its own, to its end."""
    child = Child.demo(name, "task", *args)
    await child.finish()
    return child


@asynccontextmanager
async def story_processes() -> AsyncIterator[None]:
    try:
        yield
    finally:
        for child in CHILDREN:
            child.kill()
        for child in CHILDREN:
            child.wait()
        CHILDREN.clear()


async def start_redis() -> str:
    if shutil.which("redis-server") is None:
        raise DemoError("this story needs Redis: install the redis-server package "
                        "(apt-get install redis-server, brew install redis)")
    port = free_port()
    redis = Child("redis", "redis-server", "--port", str(port), "--save", "", "--appendonly", "no")
    await redis.expect("Ready to accept connections")
    return f"redis://127.0.0.1:{port}/0"


async def start_server(*args: str, port: int | None = None) -> tuple[Child, str]:
    """Start `serve` in a process of its own; return once it accepts connections."""
    port = port or free_port()
    server = Child.demo(f"server :{port}", "serve", "--port", str(port), *args)
    await server.expect("serving http")
    deadline = now() + 30
    while now() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"http://127.0.0.1:{port}/mcp"
        if server.process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    raise DemoError(f"{server.name} never listened: {' / '.join(server.lines[-3:])}")


async def tenants(scale: float) -> Report:
    """Bearer tokens make tasks private to the client that submitted them."""
    t0 = now()
    alice, bob = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    async with story_processes():
        server, url = await start_server("--token", f"alice={alice}", "--token", f"bob={bob}")
        submit = await client_process("alice submits", "submit", "--url", url, "--token", alice,
                                      "--seconds", str(1 * scale), "--label", "alice-report")
        task_id = submit.lines[-1]

        async def fetch(who: str, token: str | None) -> str:
            args = ["result", "--url", url, task_id] + (["--token", token] if token else [])
            child = Child.demo(f"{who} fetches", "task", *args)
            try:
                return "found: " + await child.finish()
            except DemoError:
                return "refused: " + child.lines[-1]

        people = {"alice": alice, "bob": bob, "no token": None}
        views = dict(zip(people, await asyncio.gather(*(fetch(*p) for p in people.items()))))
    return Report(
        pattern="tenants",
        proved="with tokens a task id only works for its owner; without, the id is the key",
        ideal=1 * scale,
        took=now() - t0,
        checks={"alice, from another process, got her result":
                views["alice"].startswith("found") and "alice-report" in views["alice"],
                "bob was told it does not exist": "not found" in views["bob"],
                "no token, no entry": "refused the token" in views["no token"]},
        facts={"task_id": task_id, **{f"{who}_sees": v for who, v in views.items()},
               # Without auth anyone holding the id can read and cancel the
               # task, so the id must be unguessable: 32 random bytes.
               "id_entropy_bits": 8 * len(base64.urlsafe_b64decode(task_id + "=="))},
    )


async def restart(scale: float) -> Report:
    """With Redis, a task survives its server being killed outright."""
    seconds = 6 * scale
    t0 = now()
    async with story_processes():
        backend = await start_redis()
        port = free_port()
        first, url = await start_server("--backend", backend, port=port)
        async with remote(url, None) as client:
            task = await call_tool_task(client, "work", {"label": "R", "seconds": seconds,
                                                         "steps": 12})
            task_id = task.task_id
            await follow(task, t0, until=past_step(3))
        first.kill()  # SIGKILL: no shutdown, no goodbye, the task is mid-run
        killed_at = now()
        second, _ = await start_server("--backend", backend, port=port)  # same address
        async with remote(url, None) as client:
            task = await attach(client, task_id, "work")
            samples = await follow(task, t0)
            result = (await task.result()).data
            again = (await task.result()).data
        server_pids = [first.process.pid, second.process.pid]
    restarted = next(s.at for s in samples if s.message and "started" in s.message)
    return Report(
        pattern="restart",
        proved="with Redis, a task outlives a SIGKILLed server: another process finishes it",
        ideal=seconds,
        took=now() - t0,
        checks={"task completed": transitions(samples)[-1] == "completed",
                "result is the input": result["label"] == "R" and result["seconds"] == seconds,
                "finished by the new server": result["pid"] == server_pids[1] != server_pids[0],
                "same result when fetched again": result == again},
        facts={"task_id": task_id, "killed_at_s": killed_at - t0,
               "work_restarted_after_s": restarted - (killed_at - t0),
               "redelivery_timeout_s": REDELIVERY_TIMEOUT.total_seconds(),
               "after_restart": transitions(samples), "result": result},
    )


async def distributed(scale: float) -> Report:
    """Redis, a server that only accepts, two workers, and a process per client step."""
    seconds = 8 * scale
    t0 = now()
    async with story_processes():
        backend = await start_redis()
        workers = [Child.demo(f"worker {i}", "worker", "--backend", backend) for i in (1, 2)]
        server, url = await start_server("--backend", backend, "--no-worker")
        # The watcher starts now and waits for the id on stdin, like the right
        # side of `task submit | task watch -`: a process takes seconds to
        # start, and the work should not be over before it is watched.
        watch = Child.demo("watch", "task", "watch", "--url", url, "-")
        for w in workers:
            await w.expect("worker pid=")
        submit, submit_doomed = await asyncio.gather(
            client_process("submit", "submit", "--url", url, "--label", "build",
                           "--seconds", str(seconds), "--steps", "8"),
            client_process("submit doomed", "submit", "--url", url, "--label", "doomed",
                           "--seconds", str(seconds * 10)))
        task_id, to_cancel = submit.lines[-1], submit_doomed.lines[-1]
        watch.send(task_id)
        cancel = await client_process("cancel", "cancel", "--url", url, to_cancel)
        await watch.finish()
        fetched = await asyncio.gather(*(client_process(f"result {i}", "result", "--url", url,
                                                        task_id) for i in (1, 2)))
        views = {c.name: [c.lines[0]] if c in (server, *workers) else c.lines
                 for c in (server, *workers, submit, submit_doomed, watch, cancel, *fetched)}
    results = [json.loads(c.lines[-1]) for c in fetched]
    worker_pids = {w.process.pid for w in workers}
    server_pid = server.process.pid
    return Report(
        pattern="distributed",
        proved="one task, many processes: accepted by one, run by another, watched and "
               "fetched by others",
        ideal=seconds,
        took=now() - t0,
        checks={"a worker ran it, not the server": results[0]["pid"] in worker_pids
                and results[0]["pid"] != server_pid,
                "the watcher saw progress, then the end": any("step" in l for l in watch.lines)
                and watch.lines[-1].endswith("completed"),
                "two processes fetched the same result": results[0] == results[1],
                "the cancelled task is cancelled": cancel.lines[-1] == "cancelled"},
        facts={"task_id": task_id, "result": results[0],
               **{f"{name} said": lines[-1] for name, lines in views.items()},
               "watch saw": [line.split("  ")[-1] for line in watch.lines if "step" in line]},
    )


# --------------------------------------------------------------------------
# 6. The bench: what a task costs, in numbers
# --------------------------------------------------------------------------

LIBRARY_DEFAULT_POLL = TaskConfig().poll_interval  # 5 s
ZERO_WORK = {"label": "zero", "seconds": 0, "steps": 1}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[round(p / 100 * (len(ordered) - 1))]


def spread_ms(what: str, seconds: list[float]) -> dict:
    return {"what": what, "median_ms": 1000 * percentile(seconds, 50),
            "p90_ms": 1000 * percentile(seconds, 90), "worst_ms": 1000 * max(seconds)}


async def seconds_to_result(client: Client, seconds: float) -> float:
    start = now()
    task = await call_tool_task(client, "work", {"label": "lag", "seconds": seconds, "steps": 1})
    await task.result()
    return now() - start


async def result_lag(durations: tuple[float, ...], reps: int) -> list[dict]:
    """How late a finished task is seen: submit-to-result time minus the work.

    The lag depends on where the end of the work falls between two polls, so
    each repetition shifts the duration by a further slice of a poll interval:
    the figures cover every phase, not the luckiest or unluckiest one.
    """
    rows = []
    phase = POLL_INTERVAL.total_seconds() / reps
    async with (serving(poll_interval=POLL_INTERVAL) as (ours, _),
                serving(poll_interval=LIBRARY_DEFAULT_POLL) as (default, _),
                Client(ours) as ours_client, Client(default) as default_client):
        for client in (ours_client, default_client):
            await client.list_tools()  # the client caches output schemas once
        for seconds in durations:
            lags: dict[timedelta, list[float]] = {POLL_INTERVAL: [], LIBRARY_DEFAULT_POLL: []}
            for rep in range(reps):
                work = seconds + rep * phase
                # Both settings side by side: the 5 s one barely polls at all.
                ours_s, default_s = await asyncio.gather(
                    seconds_to_result(ours_client, work),
                    seconds_to_result(default_client, work))
                lags[POLL_INTERVAL].append(ours_s - work)
                lags[LIBRARY_DEFAULT_POLL].append(default_s - work)
            for interval, values in lags.items():
                rows.append({"work_s": seconds,
                             "poll_interval_ms": int(interval.total_seconds() * 1000),
                             "median_ms": 1000 * percentile(values, 50),
                             "worst_ms": 1000 * max(values)})
    return rows


async def overhead(samples: int) -> list[dict]:
    """What a task adds over a plain call, for work that takes no time."""
    plain_call, submit, status_read, to_result = [], [], [], []
    async with (serving() as (server, _), Client(server) as client,
                Client(server, mode="legacy") as plain):
        await client.list_tools()  # the client caches output schemas once
        await plain.call_tool("work", ZERO_WORK)  # warm both paths up first
        await call_tool_task(client, "work", ZERO_WORK)
        for _ in range(samples):
            start = now()
            await plain.call_tool("work", ZERO_WORK)
            plain_call.append(now() - start)

            start = now()
            task = await call_tool_task(client, "work", ZERO_WORK)
            submit.append(now() - start)
            read = now()
            await task.status()
            status_read.append(now() - read)
            await task.result()
            to_result.append(now() - start)
    return [spread_ms("plain call (no task)", plain_call), spread_ms("submit a task", submit),
            spread_ms("read its status", status_read), spread_ms("submit to result", to_result)]


async def throughput(count: int) -> dict:
    """`count` zero-length tasks submitted and collected at once, vs plain calls."""
    async with (serving() as (server, journal), Client(server) as client,
                Client(server, mode="legacy") as plain):
        await client.list_tools()
        args = [{**ZERO_WORK, "label": f"T{i}"} for i in range(count)]
        start = now()
        tasks = await asyncio.gather(*(call_tool_task(client, "work", a) for a in args))
        results = await asyncio.gather(*tasks)
        tasks_s = now() - start
        start = now()
        plain_results = await asyncio.gather(*(plain.call_tool("work", a) for a in args))
        plain_s = now() - start
    labels = [a["label"] for a in args]
    return {
        "tasks": count,
        "tasks_per_s": count / tasks_s,
        "plain_calls_per_s": count / plain_s,
        "ratio_to_plain": plain_s / tasks_s,
        "every_result_once": [r.data["label"] for r in results] == labels
        and [r.data["label"] for r in plain_results] == labels
        and all(journal.count(label, "done") == 2 for label in labels),  # task + plain
    }


def cold_start(reps: int) -> list[dict]:
    """Process start to answer, for the things a learner types first."""
    python, script = sys.executable, os.path.abspath(__file__)
    commands = {
        "tasks_demo.py --help": [script, "--help"],
        "import fastmcp_tasks": ["-c", "import fastmcp_tasks"],
        "tasks_demo.py await (first result)": [script, "--scale", "0.001", "await"],
    }
    rows = []
    for what, args in commands.items():
        times = []
        for _ in range(reps):
            start = now()
            subprocess.run([python, *args], capture_output=True, check=True)
            times.append(now() - start)
        rows.append(spread_ms(what, times))
    return rows


async def bench(quick: bool) -> dict:
    """Every figure, as plain data (printed as tables, or as JSON)."""
    from importlib.metadata import version

    return {
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "fastmcp": version("fastmcp"), "fastmcp_tasks": version("fastmcp-tasks"),
                    "pydocket": version("pydocket"), "quick": quick},
        "result_lag": await result_lag((0.1, 0.5) if quick else (0.1, 0.5, 1, 2, 3),
                                       reps=2 if quick else 4),
        "overhead": await overhead(samples=10 if quick else 50),
        "throughput": [await throughput(n) for n in ((20,) if quick else (100, 1000))],
        "compare": (await compare(0.1 if quick else 1.0)).facts | {"scale": 0.1 if quick else 1.0},
        "cold_start": cold_start(reps=1 if quick else 3),
    }


# --------------------------------------------------------------------------
# 7. Presentation: print what the patterns observed
# --------------------------------------------------------------------------

STATE_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow",
               "input_required": "magenta", "working": "cyan", "working (queued)": "dim"}


def styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def shown(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f} s" if key.endswith("_s") else f"{value:.2f}"
    if isinstance(value, list) and value and all(v in STATE_STYLE for v in value):
        return " → ".join(styled(v) for v in value)
    if isinstance(value, list):
        return ", ".join(shown(key, v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {shown(key, v)}" for k, v in value.items())
    return str(value)


def show(console: Console, report: Report) -> None:
    verdict = "[green]✓[/]" if report.holds else "[red]✗[/]"
    console.print(f"{verdict} [bold]{report.proved}[/]")
    console.print(f"  ideal {report.ideal:.2f} s, took {report.took:.2f} s")
    for check, ok in report.checks.items():
        console.print(f"  {'[green]✓[/]' if ok else '[red]✗[/]'} {check}")
    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in report.facts.items():
        table.add_row(f"[dim]{key}[/]", shown(key, value))
    console.print(table)


WHY_NO_MESSAGE = {"working (queued)": "[dim]waiting for a free worker[/]", "completed": "done"}


def dashboard(latest: dict[str, Sample]) -> Table:
    table = Table(title="tasks/get, polled at the server's pollIntervalMs")
    for column in ("task", "state", "progress", "status message", "elapsed"):
        table.add_column(column)
    for label, sample in sorted(latest.items()):
        percent = re.search(r"\((\d+)%\)", sample.message or "")
        done = 100 if sample.state == "completed" else int(percent[1]) if percent else 0
        message = sample.message or WHY_NO_MESSAGE.get(sample.state, "")
        table.add_row(label, styled(sample.state), ProgressBar(total=100, completed=done, width=20),
                      message, f"{sample.at:.2f} s")
    return table


async def run_pattern(name: str, scale: float, console: Console) -> Report:
    console.rule(f"[bold]{name}[/] — {PATTERNS[name]}")
    if name == "poll":
        with Live(dashboard({}), console=console, refresh_per_second=20) as live:
            report = await poll_dashboard(scale, lambda latest: live.update(dashboard(latest)))
        console.print()
    else:
        report = await LEARNING_ORDER[name](scale)
    show(console, report)
    return report


def summary(reports: list[Report]) -> Table:
    table = Table(title="Summary")
    for column in ("pattern", "what it proved", "ideal", "actual"):
        table.add_column(column, justify="right" if column in ("ideal", "actual") else "left")
    for r in reports:
        mark = "[green]✓[/]" if r.holds else "[red]✗[/]"
        table.add_row(r.pattern, f"{mark} {r.proved}", f"{r.ideal:.2f} s", f"{r.took:.2f} s")
    table.add_row("[bold]total[/]", "", f"{sum(r.ideal for r in reports):.2f} s",
                  f"{sum(r.took for r in reports):.2f} s")
    return table


def table_of(title: str, rows: list[dict]) -> Table:
    """A table with one column per key: `_ms`, `_s` and `_per_s` say the unit."""
    table = Table(title=title, title_justify="left")
    for key in rows[0]:
        table.add_column(key.replace("_", " "), justify="left" if key == "what" else "right")
    for row in rows:
        cells = []
        for key, value in row.items():
            if isinstance(value, bool):
                cells.append("[green]yes[/]" if value else "[red]NO[/]")
            elif isinstance(value, float):
                decimals = (0 if key.endswith("per_s") else 1 if key.endswith("_ms")
                            else 3 if key.endswith("_s") or key.startswith("ratio") else 2)
                cells.append(f"{value:.{decimals}f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def show_bench(console: Console, figures: dict) -> None:
    machine = figures["machine"]
    console.rule(f"[bold]bench[/] — Python {machine['python']}, {machine['cpus']} CPUs, "
                 f"fastmcp {machine['fastmcp']}, fastmcp-tasks {machine['fastmcp_tasks']}")
    console.print(table_of("1. Result lag: how late a finished task is seen", figures["result_lag"]))
    console.print(table_of("2. Overhead of a task, zero-length work", figures["overhead"]))
    console.print(table_of("3. Throughput, submitted and collected at once", figures["throughput"]))
    c = figures["compare"]
    console.print(table_of(
        f"4. Compare: 3 s + 2 s + 1 s of work at scale {c['scale']}",
        [{"what": what, "took_s": c[key], "ratio_to_gather": c[key] / c["gather_s"]}
         for what, key in (("sequential", "sequential_s"), ("asyncio.gather", "gather_s"),
                           ("background tasks", "tasks_s"))]))
    console.print(table_of("5. Cold start, process start to answer", figures["cold_start"]))


async def run(pattern: str, scale: float) -> bool:
    console = Console()
    if pattern in STORIES:
        console.rule(f"[bold]{pattern}[/] — {STORIES[pattern]}")
        report = await {"tenants": tenants, "restart": restart,
                        "distributed": distributed}[pattern](scale)
        show(console, report)
        return report.holds
    names = list(LEARNING_ORDER) if pattern == "all" else [pattern]
    reports = [await run_pattern(name, scale, console) for name in names]
    if pattern == "all":
        console.print(summary(reports))
    return all(r.holds for r in reports)


def main(args: argparse.Namespace) -> int:
    # The failure demo raises on purpose, and Docket and fastmcp-tasks log
    # every such error with a full traceback. Here that would bury the lesson.
    for noisy in ("docket", "fastmcp_tasks"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        if args.pattern == "bench":
            figures = asyncio.run(bench(args.quick))
            if args.json:
                print(json.dumps(figures, indent=2))
            else:
                show_bench(Console(), figures)
            return 0
        if args.pattern == "serve":
            asyncio.run(serve(args.port, args.backend, not args.no_worker, args.tokens))
            return 0
        if args.pattern == "worker":
            asyncio.run(worker(args.backend))
            return 0
        if args.pattern == "task":
            print(asyncio.run(task_command(args)))
            return 0
        return 0 if asyncio.run(run(args.pattern, args.scale)) else 1
    except DemoError as error:
        print(f"tasks_demo.py: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(ARGS))
