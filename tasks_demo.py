# /// script
# requires-python = ">=3.10"
# dependencies = [  # the server's and the lessons' (rich: the terminal), then the kit's
#     "fastmcp[tasks]>=4.1.4,<5", "mcp", "mcp-types", "pydantic", "pydocket", "rich",
#     # deploy/, beside this file (serve, worker, bench, research): a copy needs none
#     "h11", "httpx2", "pydantic-ai-slim", "pydocket[metrics]", "redis", "uvicorn",
# ]
# [tool.uv]
# exclude-newer = "2026-12-03T00:00:00Z"  # tasks_demo.py.lock, beside it, pins each version
# ///
"""MCP background tasks, taught by running them.

A background task is a tool call answered with a task id instead of a result
(SEP-2663, the `io.modelcontextprotocol/tasks` extension). Anyone holding the id
asks `tasks/get` for the state, the status message and at the end the result;
`tasks/update` answers a question the task asked; `tasks/cancel` stops it.
FastMCP runs tasks on Docket, a queue in this process's memory or in Redis.

What a task guarantees (each lesson below shows one, and checks it):
- the work goes on with no client connected: a client that closed (or whose
  process was killed: the kit's `crash`) comes back by id and gets the result;
- everyone holding the id sees the same one result, kept 15 minutes (the id,
  30 minutes from its last poll: poll a longer task, or use the kit's serve);
- cancel stops the body; a tool's error is an answer (`completed`, isError);
- a task can stop to ask its client a question, and resume with the answer;
- a server runs at most `concurrency` bodies at once; the rest wait, queued.
What it does not give: speed (asyncio.gather is as concurrent); queued versus
running (both are `working`); privacy (without authentication the id is the
only key); exactly once past one process: on Redis a body whose worker died or
stalled runs again elsewhere, and the last result written stands (the kit's
commit-once, deploy/commit.py, keeps the first result and one effect).

    uv run tasks_demo.py all              # every lesson, in this order
    uv run tasks_demo.py poll             # one of them
    uv run tasks_demo.py --help           # --scale, and the kit's commands

Down to `# END OF SERVER` is a whole server: copy it into a file and serve it
(`uv run --with 'fastmcp[tasks]' fastmcp run yours.py:mcp --transport http`).
Then: how the lessons watch it, client recipes, the lessons (`push`: a server
telling listeners each change; its side, the kit's deploy/push.py), the runner."""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.stderr.isatty():  # the imports take seconds: say so
    print("tasks_demo.py: importing fastmcp and docket…", file=sys.stderr, flush=True)

import asyncio  # noqa: E402  (and below: after that line on purpose)
import contextlib
import functools
import math
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from docket import ConcurrencyLimit
from fastmcp import Context, FastMCP
from fastmcp.dependencies import CurrentContext
from fastmcp.exceptions import ToolError
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Sent with every task as `pollIntervalMs`. At the library's 5 s a 3 s task is
# seen done at ~5 s; at 20 ms (the client's floor), ~20 ms late, for 50 tasks/get
# a second per waiting client. For hour-long tasks choose seconds.
POLL_INTERVAL = timedelta(milliseconds=20)
# `optional`: a task when the client asks for one, a plain call otherwise.
TASK = TaskConfig(mode="optional", poll_interval=POLL_INTERVAL)
CONCURRENCY = 10  # bodies one process runs at once; the rest wait, queued

# A task holds a worker slot while it runs: input limits are capacity limits.
MAX_SECONDS, MAX_STEPS = 3600, 1000
TIME_LIMIT = timedelta(seconds=MAX_SECONDS + 60)  # wall clock, whatever the inputs
# Bodies over this are refused (413) unread: parsed JSON takes tens of times its
# size (4 MiB of `{}`, the SDK's cap, is a million dicts). Ours need under 8 kB.
MAX_BODY = 16 * 1024
Seconds = Annotated[float, Field(description="how long it takes", ge=0, le=MAX_SECONDS,
                                 allow_inf_nan=False)]


class GuardedFastMCP(FastMCP):
    """FastMCP whose HTTP app, however it is served, refuses a body over MAX_BODY
    and a Host or Origin not its own (DNS rebinding: FastMCP leaves that check
    off). More host names: FASTMCP_HTTP_ALLOWED_HOSTS, or `allowed_hosts=`."""

    def http_app(self, *args: Any, **kwargs: Any) -> Any:
        # Strict, whatever comes: run_http_async passes FastMCP's default, False,
        # and "auto" checks Host only on a loopback address, not on 0.0.0.0.
        kwargs["host_origin_protection"] = True
        app = super().http_app(*args, **kwargs)
        app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY)
        return app


mcp = GuardedFastMCP("tasks-demo")
# Where tasks live: FASTMCP_DOCKET_URL, memory:// (the default: this process
# only, never freeing what expired) or redis://host:port/db, shared by every
# process on it. `name` is the queue: the same URL and name share their tasks.
mcp.add_extension(TasksExtension(name="tasks-demo", concurrency=CONCURRENCY))


async def report(ctx: Context, progress: float, total: float | None, message: str) -> None:
    """Progress, best-effort: a status lost while a Redis store blinks is no reason
    to fail the work it describes (the store's errors are Redis's own types)."""
    with contextlib.suppress(Exception):
        await ctx.report_progress(progress, total, message)


def task_body(tool: Callable) -> Callable:
    """What every tool's body runs inside. It announces itself through the tool's
    `ctx` (each tool here takes one): queued and running are both `working`, so a
    body's first act is a status message, and a `working` task without one has
    not started. A slot is capacity: whatever its inputs, no body holds one past
    TIME_LIMIT."""

    @functools.wraps(tool)
    async def body(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        if ctx is not None and ctx.is_background_task:
            await report(ctx, 0, None, f"running in process {os.getpid()}")
        try:
            return await asyncio.wait_for(tool(*args, **kwargs), TIME_LIMIT.total_seconds())
        except asyncio.TimeoutError:
            raise ToolError(f"stopped at its wall-clock limit, {TIME_LIMIT}") from None

    return body


@mcp.tool(task=TASK)  # (the tool is what task_body wraps: the body inside its promises)
@task_body
async def work(
    label: Annotated[str, Field(description="what to call this work", max_length=100)],
    seconds: Seconds,
    steps: Annotated[int, Field(description="equal steps, progress after each", ge=1,
                                le=MAX_STEPS)] = 5,
    ctx: Context = CurrentContext(),
) -> dict:
    """Work for `seconds` in equal `steps`, reporting progress after each."""
    started, reported = time.monotonic(), -math.inf
    for step in range(1, steps + 1):
        # To this step's deadline, not for a slice: reports cost ~2 ms each.
        await asyncio.sleep(started + step * seconds / steps - time.monotonic())
        # A client sees at most one status per poll: more reports are cost, and
        # on memory:// a flood of them delays a cancel (docs/any-client.md).
        if step == steps or time.monotonic() - reported >= 0.05:
            reported = time.monotonic()
            # tasks/get carries a status message, not numbers: say it in words.
            await report(ctx, step, steps, f"{label}: step {step}/{steps} "
                                           f"({100 * step // steps}%)")
    # `pid`: which process did the work; with workers, not the one that accepted it.
    return {"label": label, "seconds": seconds, "steps": steps, "pid": os.getpid()}


@mcp.tool  # no task=...: a plain tool is never run as a task
def uppercase(text: Annotated[str, Field(max_length=1000)]) -> str:
    """Answer at once: the text in capitals."""
    return text.upper()


class Decision(BaseModel):
    model_config = ConfigDict(strict=True)  # `"approved": "no"` is no boolean
    approved: bool
    approver: str


@mcp.tool(task=TASK)
@task_body
async def approve(
    action: Annotated[str, Field(description="what to ask approval for", max_length=200)],
    ctx: Context = CurrentContext(),
) -> str | InputRequiredResult:
    """Ask the user to approve `action`, then report the decision."""
    # (Clients see the docstring; here is how.) A task *returns* an
    # InputRequiredResult: it parks in `input_required`, holding no worker, and
    # runs again once the client answers (tasks/update), the answers in
    # `ctx.input_responses`. Only a plain call on the older 2025-11-25 protocol
    # holds its request open, and can carry `ctx.elicit()`.
    question = f"Approve {action!r}?"
    if not ctx.is_background_task and (
            ctx.request_context.protocol_version not in MODERN_PROTOCOL_VERSIONS):
        answer = await ctx.elicit(question, response_type=Decision)
        return decided(action, answer.action, answer.data if answer.action == "accept" else {})
    if ctx.input_responses is None:
        ask = ElicitRequestFormParams(message=question,
                                      requested_schema=Decision.model_json_schema())
        return InputRequiredResult(input_requests={"decision": ElicitRequest(params=ask)})
    answer = ctx.input_responses["decision"]
    return decided(action, answer.action, answer.content)


def decided(action: str, outcome: str, content: Any) -> str:
    """An answer is input like any other: anything but a well-formed yes is a no.
    (`outcome`: the client's accept, decline or cancel; `content`: its form.)"""
    try:
        yes = Decision.model_validate(content) if outcome == "accept" else None
    except ValidationError:
        yes = None
    return f"{action}: approved by {yes.approver}" if yes and yes.approved else f"{action}: declined"


# Docket has no priorities; it has a cap per tool. At most BULK_SLOTS reindexes
# run at once (across every worker: the count is kept in the store), so with
# more slots than that `work` never waits for a reindex to end, however many
# wait. (Or give bulk tools a queue and workers of their own.)
BULK_SLOTS = 2


@mcp.tool(task=TaskConfig(mode="required", poll_interval=POLL_INTERVAL))
@task_body
async def reindex(
    shard: Annotated[int, Field(description="which shard", ge=0, le=1000)],
    seconds: Seconds = 1.0,
    # Not inputs (clients never see them): Docket holds the body until fewer
    # than BULK_SLOTS reindexes run, counted in the store.
    bulk: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=BULK_SLOTS),
    ctx: Context = CurrentContext(),
) -> dict:
    """Reindex one shard: bulk work, always run in the background."""
    await asyncio.sleep(seconds)
    return {"shard": shard, "pid": os.getpid()}


# END OF SERVER --------- copy everything above into your own file and it runs
# (the kit's `serve` adds what a deployment wants: docs/deployment.md)

import dataclasses  # noqa: E402  (the lessons' own imports: the server above needs none)
import importlib.util  # noqa: E402
import re  # noqa: E402
from collections import OrderedDict, deque  # noqa: E402
from collections.abc import AsyncIterator, Awaitable  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Literal  # noqa: E402

from fastmcp import Client  # noqa: E402
from fastmcp.server.dependencies import get_access_token  # noqa: E402
from fastmcp.server.middleware import Middleware  # noqa: E402
from fastmcp.server.middleware.rate_limiting import RateLimitError, TokenBucketRateLimiter  # noqa: E402,E501
from fastmcp_tasks import ToolTask, call_tool_task  # noqa: E402
from fastmcp_tasks.client import TasksClientExtension  # noqa: E402
from fastmcp_tasks.client_models import ClientCreateTaskResult, ClientGetTaskResult  # noqa: E402
from fastmcp_tasks.client_models import GetTaskRequest, GetTaskRequestParams  # noqa: E402
from fastmcp_tasks.context import get_task_context  # noqa: E402
from mcp.client.extension import NotificationBinding  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp_types import (REQUEST_TIMEOUT, SubscriptionFilter,  # noqa: E402
                       SubscriptionsAcknowledgedNotification, SubscriptionsListenRequest,
                       SubscriptionsListenRequestParams, SubscriptionsListenResult)

# ===== How the lessons watch the server ===================================================
# A client knows only what the protocol tells it. To check more (the body ran
# while nobody was connected, once, stopped when cancelled, never more than N at
# once), each lesson's server wraps every body in `journaled`: JOURNAL notes, by
# the server's clock, when it starts and how it ends. Read: JOURNAL.of(id) →
# ["start", "done"] ("cancelled", "raised"); .time(id, event); .most_at_once(ids);
# .end_of(id, timeout), the end once it lands.
now = time.perf_counter  # the lessons' clock


@dataclass
class Journal:
    """Each task body's events, the last 10,000: (time, task id, event)."""
    events: deque = field(default_factory=lambda: deque(maxlen=10_000))

    async def note(self, key: str, event: str) -> None:  # async: the kit's, in Redis, is
        self.events.append((now(), key, event))

    def of(self, key: str) -> list[str]:
        return [event for _, k, event in self.events if k == key]

    def time(self, key: str, event: str) -> float:
        return next(at for at, k, e in self.events if k == key and e == event)

    async def end_of(self, key: str, timeout: float) -> str | None:
        deadline = now() + timeout
        while not (ended := [e for e in self.of(key) if e != "start"]) and now() < deadline:
            await asyncio.sleep(0.005)
        return ended[-1] if ended else None

    def most_at_once(self, keys: list[str]) -> int:
        running = peak = 0
        for _, _, event in sorted(e for e in self.events if e[1] in keys):
            running += 1 if event == "start" else -1
            peak = max(peak, running)
        return peak


JOURNAL = Journal()


def journaled(body: Callable) -> Callable:
    @functools.wraps(body)
    async def noted(*args: Any, **kwargs: Any) -> Any:
        task, end = get_task_context(), "raised"
        if task is None:  # a plain call: the lessons' evidence is about tasks
            return await body(*args, **kwargs)
        await JOURNAL.note(task.task_id, "start")
        try:
            result, end = await body(*args, **kwargs), "done"
            return result
        except asyncio.CancelledError:
            end = "cancelled"
            raise
        finally:
            await JOURNAL.note(task.task_id, end)

    return noted


def journaled_tools(server: FastMCP, tools: list, around: Callable = lambda body: body) -> None:
    """Add `tools` (mcp's) to `server`, each task body journaled inside task_body
    (and inside `around`: the kit's commit-once, which may skip a body)."""
    for tool in tools:
        if hasattr(tool.fn, "__wrapped__"):  # a task_body: journal what it wraps
            body = task_body(around(journaled(tool.fn.__wrapped__)))
            tool = tool.model_copy(update={"fn": body})
        server.add_tool(tool)


@asynccontextmanager
async def serving(concurrency: int = CONCURRENCY, middleware: tuple = (),
                  poll_interval: timedelta = POLL_INTERVAL) -> AsyncIterator[FastMCP]:
    """A fresh server with `mcp`'s tools, journaled, on an in-memory queue of its own,
    running on while the lesson's clients come and go, as a deployed one does; and
    pushing, with the kit beside this file (FastMCP itself only answers polls)."""
    server = GuardedFastMCP("lesson", middleware=list(middleware))
    server.add_extension(TasksExtension(name=f"lesson-{os.urandom(4).hex()}",
                                        concurrency=concurrency))
    journaled_tools(server, [tool.model_copy(update={"task_config": dataclasses.replace(
        tool.task_config, poll_interval=poll_interval)}) for tool in await mcp.list_tools()])
    if importlib.util.find_spec("deploy") is not None:
        from deploy.push import Push  # subscriptions/listen, from Docket's own channels

        Push(server)
    # A client held open keeps an in-memory server's lifespan (Docket's worker) running.
    async with Client(server):
        yield server


# ===== Client recipes worth pasting: attach by id, wait with a deadline, follow ===========

TERMINAL = frozenset({"completed", "failed", "cancelled"})


async def attach(client: Client, task_id: str, tool_name: str) -> ToolTask:
    """A handle on a task from its id alone. fastmcp has no such call, but a handle is
    (client, tool name, the task's record): tasks/get the record and build one. An
    unknown or expired id fails here with the server's "not found"."""
    request = GetTaskRequest(params=GetTaskRequestParams(task_id=task_id))
    record = await client.session.send_request(request, ClientGetTaskResult)
    created = ClientCreateTaskResult.model_validate(
        {**record.model_dump(by_alias=True, exclude={"result", "error", "input_requests"}),
         "resultType": "task"})
    return ToolTask(client, tool_name, created)


async def wait(task: ToolTask, timeout: float) -> ClientGetTaskResult:
    """task.wait(), raising TimeoutError however the deadline falls (when it falls
    inside a tasks/get, fastmcp raises that request's MCPError). The task runs on."""
    try:
        return await task.wait(timeout=timeout)
    except MCPError as error:
        if error.error.code != REQUEST_TIMEOUT:
            raise
        raise TimeoutError(f"task {task.task_id[:8]}… still running") from None


@dataclass
class Sample:
    """One tasks/get as a client saw it: sent and answered (seconds since t0)."""
    asked: float
    at: float
    state: str  # see state_of
    message: str | None


async def follow(task: ToolTask, t0: float, *, timeout: float = 300,
                 until: Callable[[ClientGetTaskResult], bool] = lambda status: False,
                 on_sample: Callable[[Sample], None] = lambda sample: None) -> list[Sample]:
    """Poll a task at its advertised interval until it ends, `until` holds, or `timeout`."""
    samples, deadline = [], now() + timeout
    while True:
        asked, status = now() - t0, await task.status()
        samples.append(Sample(asked, now() - t0, state_of(status), status.status_message))
        on_sample(samples[-1])
        if status.status in TERMINAL or until(status):
            return samples
        if now() > deadline:
            raise TimeoutError(f"task {task.task_id[:8]}… still {status.status}")
        await asyncio.sleep((status.poll_interval_ms or 1000) / 1000)


def state_of(status: ClientGetTaskResult) -> str:
    """`working (queued)`: working, and the body has not said a word yet."""
    queued = status.status == "working" and status.status_message is None
    return "working (queued)" if queued else status.status


def step_of(message: str | None) -> int:
    found = re.search(r"step (\d+)/", message or "")
    return int(found[1]) if found else 0


def past_step(step: int) -> Callable[[ClientGetTaskResult], bool]:
    return lambda status: step_of(status.status_message) >= step


def transitions(samples: list[Sample]) -> list[str]:
    """The states seen, in order, without repeats."""
    return [s.state for i, s in enumerate(samples) if i == 0 or samples[i - 1].state != s.state]


class Pushed(ClientGetTaskResult):
    """A task's record as a server pushes it: tasks/get's, without the result's envelope."""
    result_type: Literal["complete"] = Field(default="complete", alias="resultType")


class Listener(TasksClientExtension):
    """fastmcp's tasks client extension, also hearing what a server pushes. Give it to
    the client twice, for the records and for the acks (fastmcp hands those only to
    a message handler): `Client(url, extensions=[listener], message_handler=listener)`.
    It stands in for fastmcp's own: for a plain call_tool that may ask a question,
    build it as `Listener(fastmcp.client.elicitation.create_elicitation_callback(h))`."""

    def __init__(self, elicitation_callback: Any = None):
        super().__init__(elicitation_callback)
        self.records: dict[str, asyncio.Queue] = {}  # task id → its pushed records
        self.acks: asyncio.Queue = asyncio.Queue()
        self.asked = 0  # tasks/get sent instead (by `listen`): what push saved, when zero

    def notifications(self) -> tuple:
        return (NotificationBinding(method="notifications/tasks", params_type=Pushed,
                                    handler=self.pushed),)

    async def pushed(self, record: Pushed) -> None:
        if record.task_id in self.records:
            self.records[record.task_id].put_nowait(record)

    async def __call__(self, message: Any) -> None:
        if isinstance(message, SubscriptionsAcknowledgedNotification):
            self.acks.put_nowait((message.params.notifications.model_extra or {}).get("taskIds"))


async def listen(client: Client, listener: Listener, task_ids: list[str], timeout: float = 300
                 ) -> AsyncIterator[ClientGetTaskResult]:
    """Each change of each task, as the server pushes it, until every one has ended.
    Where the server does not push, or the stream drops: tasks/get instead, at once
    to catch up (the spec has no replay), then at the task's pollIntervalMs. An id
    the server left out of its ack is polled too, and tasks/get's "not found" raised.
    One `listen` at a time on a Listener (the acks come in order)."""
    deadline, pushed = now() + timeout, asyncio.Queue()
    last: dict[str, ClientGetTaskResult | None] = dict.fromkeys(task_ids)
    listener.records.update(dict.fromkeys(task_ids, pushed))
    request = SubscriptionsListenRequest(params=SubscriptionsListenRequestParams(
        notifications=SubscriptionFilter(taskIds=task_ids)))
    # The stream is this request's answer, in coming: it returns when the stream ends.
    stream = asyncio.ensure_future(client.session.send_request(
        request, SubscriptionsListenResult, request_read_timeout_seconds=timeout))
    ack, record = asyncio.ensure_future(listener.acks.get()), asyncio.ensure_future(pushed.get())
    try:
        await asyncio.wait({stream, ack}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        agreed = set(ack.result() or ()) if ack.done() else set()
        polled, next_poll = set(task_ids) - agreed, now()
        while not all(r and r.status in TERMINAL for r in last.values()):
            if now() > deadline:
                raise TimeoutError(f"not every one of {len(task_ids)} tasks ended in {timeout} s")
            if stream.done() and polled != set(task_ids):  # refused, or dropped: poll all
                polled, next_poll = set(task_ids), now()
            await asyncio.wait({record} if stream.done() else {record, stream},
                               timeout=max(0, (next_poll if polled else deadline) - now()),
                               return_when=asyncio.FIRST_COMPLETED)
            got = []
            if record.done():
                got, record = [record.result()], asyncio.ensure_future(pushed.get())
            if polled and now() >= next_poll:
                for task_id in polled:
                    if not (last[task_id] and last[task_id].status in TERMINAL):
                        listener.asked += 1
                        got.append(await client.session.send_request(GetTaskRequest(
                            params=GetTaskRequestParams(task_id=task_id)), ClientGetTaskResult))
                next_poll = now() + min((r.poll_interval_ms or 1000 for r in got),
                                        default=1000) / 1000
            for new in got:
                seen = last[new.task_id]
                if seen is None or (new.status, new.status_message) != (seen.status,
                                                                        seen.status_message):
                    last[new.task_id] = new
                    yield new
    finally:
        for waiting in (stream, ack, record):
            waiting.cancel()
        for task_id in task_ids:
            listener.records.pop(task_id, None)


# ===== The lessons, in the order a learner meets them =====================================
# Each is a short function named like its subcommand. Its docstring is the
# claim; it returns what it observed, including the checks that make the
# claim true or false for this run. `say` tells the terminal what it waits for.


@dataclass
class Observed:
    ideal: float  # seconds the work needs if nothing is wasted
    checks: dict[str, bool]  # the claim, broken into what was checked
    facts: dict[str, Any] = field(default_factory=dict)


LESSONS: dict[str, Callable[..., Awaitable[Observed]]] = {}
NARRATORS: list[Callable[[str], None]] = []  # the terminal's live status, when it shows one


def lesson(fn: Callable[..., Awaitable[Observed]]) -> Callable[..., Awaitable[Observed]]:
    """Register a lesson under its subcommand: `await_` → `await`."""
    LESSONS[fn.__name__.strip("_").replace("_", "-")] = fn
    return fn


def say(what: str) -> None:
    """What the lesson is doing now, for the terminal to show while it waits."""
    for narrate in NARRATORS:
        narrate(what)


async def room(client: Client, requests: int = 20) -> float:
    """This machine's time for `requests` requests now (the slowest of three, after a first):
    a body that must still run when the client acts lasts this long, loaded or not."""
    times = []
    for _ in range(4):
        start = now()
        await client.list_tools()
        times.append(now() - start)
    return requests * max(times[1:])  # (the first builds caches: slow on any machine)


@lesson
async def compare(scale: float) -> Observed:
    """3 s + 2 s + 1 s of work, sequential, gathered, as tasks: tasks add a lifecycle, not speed."""
    args = [{"label": label, "seconds": s * scale} for label, s in (("A", 3), ("B", 2), ("C", 1))]
    async with serving() as server:
        # A client that does not speak the tasks extension (here: the older
        # 2025-11-25 handshake) makes plain calls: optional-mode tools allow it.
        async with Client(server, mode="legacy") as plain, Client(server) as client:
            say("three plain calls, one after another")
            start = now()
            sequential = [(await plain.call_tool("work", a)).data for a in args]
            sequential_s, start = now() - start, now()
            say("the same three plain calls, gathered")
            gathered = [r.data for r in await asyncio.gather(
                *(plain.call_tool("work", a) for a in args))]
            gather_s, start = now() - start, now()
            say("the same three as tasks, gathered")
            tasks = await asyncio.gather(*(call_tool_task(client, "work", a) for a in args))
            background = [r.data for r in await asyncio.gather(*tasks)]
            tasks_s = now() - start
    ids = [t.task_id for t in tasks]
    expected = [{**a, "steps": 5, "pid": os.getpid()} for a in args]
    return Observed(
        ideal=(6 + 3 + 3) * scale,
        checks={"every way returned every result": sequential == gathered == background
                == expected,
                "gather and tasks both beat sequential": max(gather_s, tasks_s) < sequential_s,
                # What speed there is comes from running side by side, as gather does:
                "the three task bodies ran at once": JOURNAL.most_at_once(ids) == 3},
        facts={"sequential_s": sequential_s, "gather_s": gather_s, "tasks_s": tasks_s,
               "tasks_over_gather": tasks_s / gather_s})


@lesson
async def await_(scale: float, count: int = 20) -> Observed:
    """A submitted task frees the client while it runs; `await task` is its result, once."""
    async with serving(concurrency=count) as server, Client(server) as client:
        seconds = max(2 * scale, await room(client))
        say(f"{count} tasks of {seconds:.2g} s, each call answered at once")
        tasks = [await call_tool_task(client, "work", {
            "label": f"T{i}", "seconds": seconds, "steps": 1}) for i in range(count)]
        other = (await client.call_tool("uppercase", {"text": "meanwhile"})).data
        answered = now()
        try:  # a bounded wait that is too short gives up; the task does not
            await wait(tasks[-1], timeout=seconds / 4)
            gave_up = None
        except TimeoutError:
            gave_up = now()
        after = await tasks[-1].status()
        results = [(await task).data for task in tasks]  # `await task`: its result
    ids = [t.task_id for t in tasks]
    return Observed(
        ideal=seconds,
        checks={"the client answered another call while bodies ran": other == "MEANWHILE"
                and answered < max(JOURNAL.time(i, "done") for i in ids),
                "a short wait gave up, the task worked on": gave_up is not None
                and JOURNAL.time(ids[-1], "done") > gave_up,
                "each result matches its call": [r["label"] for r in results]
                == [f"T{i}" for i in range(count)],
                "each body ran exactly once": all(JOURNAL.of(i) == ["start", "done"] for i in ids),
                "they ran side by side": JOURNAL.most_at_once(ids) > 1},
        # What the server tells every client about every task, and one result:
        facts={"poll_every_ms": after.poll_interval_ms, "result_kept_for_min":
               after.ttl_ms / 60_000, "first_result": results[0], "tasks": len(set(ids))})


# A teaching mock, beside the lesson that watches it: partial results in words.
@mcp.tool(task=TASK)
@task_body
async def run_tests(
    suite: Annotated[str, Field(description="which suite", max_length=100)],
    tests: Annotated[int, Field(description="how many tests", ge=1, le=MAX_STEPS)] = 20,
    seconds: Seconds = 2.0,
    ctx: Context = CurrentContext(),
) -> dict:
    """Run a test suite (a mock: every seventh test fails), naming failures at once."""
    failed = []
    for i in range(1, tests + 1):
        await asyncio.sleep(seconds / tests)
        if i % 7 == 0:
            failed.append(f"test_{i}")
        await report(ctx, i, tests, f"{i}/{tests} run, {i - len(failed)} passed, "
                                    f"failed: {', '.join(failed) or 'none'}")
    return {"suite": suite, "passed": tests - len(failed), "failed": failed}


@lesson
async def poll(scale: float, on_sample: Callable[[str, Sample], None] = lambda *_: None
               ) -> Observed:
    """Watch tasks live from tasks/get: their progress, and a suite's failures as they happen."""
    t0 = now()
    calls = {"A": ("work", {"label": "A", "seconds": 3 * scale}),
             "B": ("work", {"label": "B", "seconds": 2 * scale}),
             "suite": ("run_tests", {"suite": "checkout", "tests": 20, "seconds": 2 * scale})}
    async with serving() as server, Client(server) as client:
        tasks = {k: await call_tool_task(client, tool, args) for k, (tool, args) in calls.items()}
        histories = dict(zip(tasks, await asyncio.gather(*(  # each sample to the live table
            follow(task, t0, on_sample=functools.partial(on_sample, k))
            for k, task in tasks.items()))))
        suite = (await tasks["suite"].result()).data
    steps = {k: [step_of(s.message) for s in histories[k] if step_of(s.message)] for k in "AB"}
    # When each body ended, by the server's clock: a poll sees it a little later.
    ended = {label: JOURNAL.time(task.task_id, "done") - t0 for label, task in tasks.items()}
    failed = next((s for s in histories["suite"] if "failed: test_7" in (s.message or "")), None)
    return Observed(
        ideal=3 * scale,
        checks={"every task ended completed": all(h[-1].state == "completed"
                                                  for h in histories.values()),
                "progress was seen, only ever moving forwards": bool(steps["A"])
                and all(s == sorted(s) for s in steps.values()),
                # (the message is the server's own record of how far the suite was)
                "the suite's first failure was seen while it ran": failed is not None
                and int(failed.message.split("/")[0]) < 20},
        facts={"transitions": {k: transitions(h) for k, h in histories.items()},
               "steps_seen": {k: list(dict.fromkeys(v)) for k, v in steps.items()},
               "first_failure_seen": failed and f"{failed.message}, at {failed.at:.2f} s",
               "suite_report": suite,
               "ended_at_s": ended, "seen_ended_at_s": {k: h[-1].at for k, h in histories.items()}})


@lesson
async def push(scale: float) -> Observed:
    """Listen instead of polling: told each change polling saw, sooner, for one request."""
    # The server side is the kit's deploy/push.py. Here tasks advertise a poll
    # interval in seconds, as long tasks should: polling faster buys sooner news
    # with requests; push buys it with nothing.
    ends, every = {"A": 2.5, "B": 1.5, "C": 0.7}, timedelta(seconds=scale)
    listener = Listener()
    async with serving(poll_interval=every) as server, Client(server) as poller, \
            Client(server, extensions=[listener], message_handler=listener) as listening:
        tasks = [await call_tool_task(poller, "work", {"label": label, "seconds": s * scale,
                                                       "steps": 4}) for label, s in ends.items()]
        ids, pushed, t0 = [t.task_id for t in tasks], [], now()
        say("one client listens to three tasks; another polls each")
        records = listen(listening, listener, ids)
        # Poll from when push has told where each task stands: both then see the same span.
        while len({record.task_id for _, record in pushed}) < len(ids):
            pushed.append((now(), await anext(records)))
        polling = asyncio.gather(*(follow(task, t0) for task in tasks))
        pushed += [(now(), record) async for record in records]
        polled = await polling
    told = {i: {(r.status, r.status_message) for _, r in pushed if r.task_id == i} for i in ids}
    done = {i: JOURNAL.time(i, "done") for i in ids}  # each body's end, by the server's clock
    lag = {"push": {i: next(at for at, r in pushed if r.task_id == i and r.status in TERMINAL)
                    - done[i] for i in ids},
           "poll": {i: t0 + samples[-1].at - done[i] for i, samples in zip(ids, polled)}}
    return Observed(
        ideal=3 * scale,
        checks={"push told every change polling saw": all(
                    {(s.state.split(" ")[0], s.message) for s in samples} <= told[i]
                    for i, samples in zip(ids, polled)),
                "every record came by push: no tasks/get": listener.asked == 0,
                # (In all: a poll may land a moment after one end, never after every end.)
                "push told the ends sooner, in all": sum(lag["push"].values())
                < sum(lag["poll"].values())},
        facts={"requests": {"polling (tasks/get)": sum(map(len, polled)),
                            "push": 1 + listener.asked},
               "changes_seen": {"polling": sum(len({(s.state, s.message) for s in samples})
                                               for samples in polled), "push": len(pushed)},
               "end_seen_after_ms": {way: ", ".join(f"{label} {v * 1000:.0f}" for label, v in
                                                    zip(ends, lags.values()))
                                     for way, lags in lag.items()}})


@lesson
async def reconnect(scale: float) -> Observed:
    """Close the client mid-task; later any client holding the id attaches: the work went on."""
    t0 = now()
    async with serving() as server:
        async with Client(server) as first:
            seconds = max(2 * scale, await room(first))
            task = await call_tool_task(first, "work", {"label": "R", "seconds": seconds,
                                                        "steps": 10})
            task_id = task.task_id  # the only thing we keep (or paste to a teammate)
            before = await follow(task, t0, until=past_step(2))
        closed_at = now()
        say("nobody is connected")
        await asyncio.sleep(seconds / 2)
        async with Client(server) as second, Client(server) as teammate:
            after = await follow(task := await attach(second, task_id, "work"), t0)
            mine = (await task.result()).data
            theirs = (await (await attach(teammate, task_id, "work")).result()).data
    left = step_of(before[-1].message)  # where the work was when we left, and came back
    found = 10 if after[0].state == "completed" else step_of(after[0].message)
    return Observed(
        ideal=seconds,
        checks={"the body ran on, alone": JOURNAL.time(task_id, "start") < closed_at
                < JOURNAL.time(task_id, "done"),
                "progress moved on while nobody watched": found > left,
                "the new client, and a teammate's, got one result": mine == theirs
                and mine["label"] == "R",
                "the body ran once": JOURNAL.of(task_id) == ["start", "done"]},
        facts={"step_when_closing": left, "step_when_reopening": found,
               "last_seen_before_closing": before[-1].message,
               "first_seen_after_reopening": after[0].message or after[0].state})


@lesson
async def cancel(scale: float) -> Observed:
    """Cancel a running task: it reports cancelled, and its body stops."""
    t0 = now()
    async with serving() as server, Client(server) as client:
        seconds = max(2 * scale, await room(client))
        task = await call_tool_task(client, "work", {"label": "X", "seconds": seconds, "steps": 10})
        await follow(task, t0, until=past_step(2))
        cancelled_at = now()
        await task.cancel()
        after = await follow(task, t0)
        ended = await JOURNAL.end_of(task.task_id, timeout=seconds + 2)  # the server's word
        try:
            raised = f"returned {await task.result()}"
        except ToolError as error:
            raised = f"raised: {error}"
    return Observed(
        ideal=seconds * 0.2,
        checks={"the task ended cancelled": after[-1].state == "cancelled",
                "the body was interrupted, not finished": ended == "cancelled"
                and JOURNAL.time(task.task_id, ended) >= cancelled_at,
                "result() raises": raised.startswith("raised")},
        facts={"body_ended": ended, "result": raised, "body_stopped_after_cancel_ms":
               (JOURNAL.time(task.task_id, ended) - cancelled_at) * 1000 if ended else None})


# A teaching tool, not one to copy: the server's own tools fail as this does.
@mcp.tool(task=TASK)
@task_body
async def fail(kind: Literal["bad_input", "bug", "backend_down"]) -> str:
    """Fail on purpose: as a tool would (bad_input, bug) or as a server would."""
    # A tool that raises anything ends `completed` with an isError answer, as a
    # plain call would; only an MCPError (the server failing) ends `failed`.
    if kind == "bad_input":
        raise ToolError("the input was rejected by the tool")
    if kind == "bug":
        raise ValueError("division by zero in step 3")
    raise MCPError(code=-32603, message="the storage backend is unreachable")


@lesson
async def failure(scale: float) -> Observed:
    """A tool error is an answer (completed, isError); only a protocol error ends failed."""
    outcomes = {}
    async with serving() as server, Client(server) as client:
        for kind in ("bad_input", "bug", "backend_down"):
            task = await call_tool_task(client, "fail", {"kind": kind}, raise_on_error=False)
            final = await wait(task, timeout=10)
            result, error = final.result or {}, final.error or {}
            outcomes[kind] = {"state": final.status, "is_error": bool(result.get("isError")),
                              "says": (result.get("content") or [{}])[0].get("text")
                              or error.get("message"), "code": error.get("code")}
    state = {kind: (o["state"], o["is_error"], o["code"]) for kind, o in outcomes.items()}
    return Observed(
        ideal=0.0,
        checks={"ToolError → completed, isError": state["bad_input"] == ("completed", True, None),
                "ValueError → completed, isError": state["bug"] == ("completed", True, None),
                "MCPError → failed, with its code": state["backend_down"] == ("failed", False,
                                                                               -32603)},
        facts=outcomes)


@lesson
async def input_(scale: float) -> Observed:
    """A task parks in input_required, the client answers, the task resumes with the answer."""
    asked: list[str] = []

    async def approver(message, response_type, params, context) -> dict:  # fastmcp's shape
        asked.append(message)
        say("a human decides")
        await asyncio.sleep(0.5 * scale)
        return {"approved": True, "approver": "dana"}

    t0 = now()
    async with serving() as server, Client(server, elicitation_handler=approver) as client:
        task = await call_tool_task(client, "approve", {"action": "deploy v2"})
        before = await follow(task, t0, until=lambda s: s.status == "input_required")
        result = await task.result()  # answers through the elicitation handler
        final = await task.status()
    return Observed(
        ideal=0.5 * scale,
        checks={"it parked in input_required": before[-1].state == "input_required",
                "the handler saw the question": asked == ["Approve 'deploy v2'?"],
                "it resumed with the answer": result.data == "deploy v2: approved by dana",
                "the body ran twice, once per leg":
                JOURNAL.of(task.task_id) == ["start", "done", "start", "done"]},
        facts={"seen_by_polling": transitions(before), "then": final.status,
               "result": result.data})


class SubmissionLimit(Middleware):
    """A token bucket per client on tools/call only (a poll is never refused), keyed by the
    authenticated client, else the id a caller *declares* in `_meta` (that keeps honest
    clients from starving each other, not an attacker out); the `clients` latest kept."""

    def __init__(self, burst: int, per_second: float, clients: int = 10_000):
        self.burst, self.per_second, self.clients = burst, per_second, clients
        self.buckets: OrderedDict[str, TokenBucketRateLimiter] = OrderedDict()

    async def on_call_tool(self, context, call_next):
        token = get_access_token()
        who = token.client_id if token else context.fastmcp_context.client_id or "anonymous"
        bucket = self.buckets.pop(who, None) or TokenBucketRateLimiter(self.burst, self.per_second)
        self.buckets[who] = bucket  # now the most recently seen
        if len(self.buckets) > self.clients:
            self.buckets.popitem(last=False)
        if not await bucket.consume():
            raise RateLimitError(f"rate limit: {who} submits too fast")
        return await call_next(context)


@lesson
async def limits(scale: float) -> Observed:
    """At most 2 bodies run at once, the rest wait queued; a client that floods is refused."""
    slots, accepted, refused, t0 = 2, {}, [], now()
    # Refill is negligible over the burst, so exactly 4 calls get in.
    limit = SubmissionLimit(burst=4, per_second=0.01)
    async with serving(concurrency=slots, middleware=(limit,)) as server, Client(server) as client:
        seconds = max(0.5 * scale, await room(client))
        say("alice submits 3 tasks, bob 6")
        for label in [f"alice-{i}" for i in range(3)] + [f"bob-{i}" for i in range(6)]:
            try:  # no auth here: the key is the client id each one declares
                accepted[label] = await call_tool_task(client, "work", {
                    "label": label, "seconds": seconds, "steps": 1},
                    meta={"client_id": label.split("-")[0]})
            except MCPError as error:
                refused.append(f"{label}: {error}")
        histories = await asyncio.gather(*(follow(t, t0) for t in accepted.values()))
    ids = [t.task_id for t in accepted.values()]
    first_end = min(JOURNAL.time(i, "done") for i in ids)
    queued = [(s, i) for h, i in zip(histories, ids) for s in h if s.state == "working (queued)"]
    return Observed(
        ideal=math.ceil(len(ids) / slots) * seconds,
        checks={"never more than 2 ran at once": JOURNAL.most_at_once(ids) == slots,
                "the rest started only as others ended":
                sum(JOURNAL.time(i, "start") >= first_end for i in ids) == len(ids) - slots,
                "seen queued ⇒ truly not started": bool(queued) and all(
                    t0 + s.asked < JOURNAL.time(i, "start") for s, i in queued),
                "bob was cut off after 4": [r.split(":")[0] for r in refused]
                == ["bob-4", "bob-5"],
                "every accepted task completed": all(h[-1].state == "completed"
                                                     for h in histories)},
        facts={"accepted": list(accepted), "refused": refused,
               "polls_that_saw_queued": len(queued),
               "started_at_s": sorted(JOURNAL.time(i, "start") - t0 for i in ids)})


@lesson
async def priority(scale: float, bulk: int = 6) -> Observed:
    """Bulk work capped below the slots: interactive work overtakes the bulk queue."""
    t0 = now()
    async with serving(concurrency=BULK_SLOTS + 1) as server, Client(server) as client:
        seconds = max(1 * scale, await room(client))
        say(f"{bulk} reindex tasks on {BULK_SLOTS + 1} slots, then one `work`")
        shards = [await call_tool_task(client, "reindex", {"shard": i, "seconds": seconds})
                  for i in range(bulk)]
        # Once bulk work runs (its first body has spoken), the interactive call:
        await follow(shards[0], t0, until=lambda status: status.status_message is not None)
        asked = now()
        urgent = await call_tool_task(client, "work", {"label": "urgent", "seconds": 0,
                                                       "steps": 1})
        await urgent
        await asyncio.gather(*shards)
    ids, started = [t.task_id for t in shards], JOURNAL.time(urgent.task_id, "start")
    return Observed(
        ideal=math.ceil(bulk / BULK_SLOTS) * seconds,
        checks={f"bulk never held more than {BULK_SLOTS} slots":
                JOURNAL.most_at_once(ids) == BULK_SLOTS,
                "the interactive task overtook bulk tasks queued before it":
                started < max(JOURNAL.time(i, "start") for i in ids),
                "every bulk task completed": all(JOURNAL.of(i) == ["start", "done"] for i in ids)},
        facts={"urgent_waited_ms": (started - asked) * 1000,
               "bulk_started_at_s": sorted(JOURNAL.time(i, "start") - t0 for i in ids),
               "bulk_ended_at_s": sorted(JOURNAL.time(i, "done") - t0 for i in ids)})


# ===== The runner: what the lessons observed, on the terminal, and the command line =======
import argparse  # noqa: E402  (the runner's imports: no lesson needs them)
import difflib  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402

from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.progress_bar import ProgressBar  # noqa: E402
from rich.spinner import Spinner  # noqa: E402
from rich.table import Table  # noqa: E402

STATE_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow",
               "input_required": "magenta", "working": "cyan", "working (queued)": "dim"}


def styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def shown(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f} s" if key.endswith("_s") else f"{value:.2f}"
    if isinstance(value, list) and value and all(v in STATE_STYLE for v in value):
        return " → ".join(styled(v) for v in value)
    if isinstance(value, list | dict) and not value:
        return "none"
    if isinstance(value, list):
        return ", ".join(shown(key, v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {shown(key, v)}" for k, v in value.items())
    return str(value)


def claim(fn: Callable) -> str:
    return fn.__doc__.strip().splitlines()[0]


def dashboard(latest: dict[str, Sample]) -> Table:
    """The poll lesson's live table; fixed column widths, so it never jumps."""
    table = Table(title="tasks/get, polled at the server's pollIntervalMs", title_justify="left",
                  box=box.SIMPLE_HEAD)  # fits an 80-column terminal; long messages wrap
    for column, width in (("task", 6), ("state", 16), ("progress", 10),
                          ("status message", 26), ("elapsed", 8)):
        table.add_column(column, width=width, overflow="fold")
    for label, sample in sorted(latest.items()):
        part = re.search(r"(\d+)/(\d+)", sample.message or "")  # step 2/5, 7/20 run
        done = 1 if sample.state == "completed" else int(part[1]) / int(part[2]) if part else 0
        message = sample.message or {"working (queued)": "[dim]queued: no worker has it yet[/]",
                                     "completed": "[dim](the result is in)[/]"}.get(sample.state, "")
        table.add_row(label, styled(sample.state), ProgressBar(total=1, completed=done, width=10),
                      message, f"{sample.at:.2f} s")
    return table


class Narration:
    """What a lesson says it waits for: live on a terminal (never silent for long),
    a plain line each otherwise. It redraws from the event loop, not from a thread
    of its own: after Ctrl-C (leave_now) nothing draws again."""

    def __init__(self, console: Console, name: str):
        self.console, self.name, self.said, self.start = console, name, "starting", now()
        self.spinner = Spinner("dots")  # one spinner: it turns with time
        self.live = Live(self, console=console, auto_refresh=False, transient=True) \
            if console.is_terminal else None

    def __rich__(self) -> Any:
        self.spinner.update(text=f"[dim]{self.name}: {self.said} ({now() - self.start:.1f} s)[/]")
        return self.spinner

    def __call__(self, what: str) -> None:
        self.said = what
        if self.live is None:
            self.console.print(f"  [dim]… {what}[/]")

    async def redraw(self) -> None:
        while True:
            self.live.refresh()
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> Narration:
        NARRATORS.append(self)
        if self.live:
            self.live.start()
            self.redrawing = asyncio.create_task(self.redraw())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        NARRATORS.remove(self)
        if self.live:
            self.redrawing.cancel()
            self.live.stop()


async def run_one(name: str, fn: Callable[..., Awaitable[Observed]], scale: float,
                  console: Console, **options: Any) -> tuple[str, Observed, float]:
    heading = f"{name} — {claim(fn)}"
    if console.is_terminal and len(heading) + 8 <= console.width:
        console.rule(f"[bold]{heading}[/]")
    else:  # a rule would cut the heading to the width
        console.print(f"\n== {heading}", soft_wrap=True)
    start = now()
    if name == "poll" and console.is_terminal:  # the showcase: a live table
        with Live(dashboard({}), console=console, auto_refresh=False) as live:
            latest: dict[str, Sample] = {}

            def show_sample(label: str, sample: Sample) -> None:
                latest[label] = sample
                live.update(dashboard(latest), refresh=True)

            seen = await fn(scale, show_sample)
        console.print()
    else:
        async with Narration(console, name):
            seen = await fn(scale, **{k: v for k, v in options.items() if v is not None})
    took = now() - start
    for check, ok in seen.checks.items():
        console.print(f"  {'[green]✓[/]' if ok else '[red]✗[/]'} {check}")
    console.print(f"  [dim]ideal {seen.ideal:.2f} s, took {took:.2f} s[/]")
    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in seen.facts.items():
        table.add_row(f"[dim]{key}[/]", shown(key, value))
    console.print(table)
    return name, seen, took


# ----- The command line: the lessons, then the kit's (deploy/, when it is beside) -----


class OneLineErrors(argparse.ArgumentParser):
    """An argparse parser whose errors are a single line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        # A mistyped command: the nearest one, not the whole list.
        typo = re.match(r"argument (\w+): invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if typo:
            choices = re.findall(r"'([^']*)'", typo[3])
            near = difflib.get_close_matches(typo[2], choices, n=1)
            message = (f"argument {typo[1]}: no such choice {typo[2]!r}"
                       + (f": did you mean {near[0]!r}?" if near else ""))
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


SCALE_HELP = "multiply every duration (0.1 runs ten times faster); 0.1 to 10, default 1"


def runnable(commands: Any, name: str, summary_line: str) -> argparse.ArgumentParser:
    """A command that runs a lesson (or a story): --scale after its name too."""
    command = commands.add_parser(name, help=summary_line, description=summary_line)
    # SUPPRESS keeps a value given before the command.
    command.add_argument("--scale", type=float, default=argparse.SUPPRESS, help=SCALE_HELP)
    return command


def leave_now(signum: int = signal.SIGINT, *_: Any) -> None:
    """Ctrl-C: in memory every task dies with this process anyway, so leave at once
    (exit 128+N), the cursor shown, past any live display (none draws from a thread)."""
    print("\x1b[?25h" if sys.__stdout__.isatty() else "", end="", file=sys.__stdout__, flush=True)
    sys.__stderr__.write("\ninterrupted\n")
    os._exit(128 + signum)


async def run(lessons: dict[str, Callable[..., Awaitable[Observed]]], scale: float,
              **options: Any) -> bool:
    """Run each lesson (or story) and show what it observed; after several, a summary."""
    # Not a terminal: wide enough that nothing is cut, and no control codes.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        runs = [await run_one(name, fn, scale, console, **options) for name, fn in lessons.items()]
    finally:  # Docket's in-memory Redis runs threads: stopped in the loop, not at exit
        from docket._redis_memory import clear_memory_servers  # (private: no public one)

        await clear_memory_servers()
    if len(runs) > 1:  # a summary
        table = Table(title="Summary")
        for column in ("lesson", "what it showed", "ideal", "took"):
            table.add_column(column, justify="right" if column in ("ideal", "took") else "left")
        for name, seen, took in runs:
            mark = "[green]✓[/]" if all(seen.checks.values()) else "[red]✗[/]"
            table.add_row(name, f"{mark} {claim(lessons[name])}", f"{seen.ideal:.2f} s",
                          f"{took:.2f} s")
        table.add_row("[bold]total[/]", "", f"{sum(s.ideal for _, s, _ in runs):.2f} s",
                      f"{sum(t for _, _, t in runs):.2f} s")
        console.print(table)
    return all(all(seen.checks.values()) for _, seen, _ in runs)


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line: the lessons, then the kit's commands when it is beside us."""
    parser = OneLineErrors(prog="tasks_demo.py", description="MCP background tasks on "
                           "FastMCP 4, taught by running them.")
    parser.add_argument("--scale", type=float, default=1.0, help=SCALE_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, fn in LESSONS.items():
        runnable(commands, name, claim(fn))
    runnable(commands, "all", "every lesson above, in this order, with a summary")
    if importlib.util.find_spec("deploy") is not None:  # the kit (deploy/) is here
        sys.modules.setdefault("tasks_demo", sys.modules[__name__])  # one module, not two
        from deploy import cli

        argv = cli.add_commands(commands, argv)
    args = parser.parse_args(argv)
    # Below 0.1 a step is shorter than a poll and lessons miss what they show; past
    # 10 some tasks would ask for more than an hour. (NaN fails this too.)
    if not 0.1 <= args.scale <= 10:
        parser.error(f"--scale: must be from 0.1 to 10, got {args.scale}")
    return parser, args


def main(argv: list[str]) -> int:
    parser, args = parse(argv)
    if args.command not in (*LESSONS, "all"):  # a command of the kit's
        from deploy import cli

        return cli.main(parser, args)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, kill, hangup
        signal.signal(sig, leave_now)
    logging.disable(logging.CRITICAL)  # the failure lesson raises on purpose: no tracebacks
    chosen = LESSONS if args.command == "all" else {args.command: LESSONS[args.command]}
    return 0 if asyncio.run(run(chosen, args.scale)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
