"""Push: a server that tells listeners each change of a task, instead of being polled.

Polling costs a request per look and sees the end up to an interval late. The
tasks extension lets a server push instead: a client sends
`subscriptions/listen` with `notifications.taskIds`; the server acknowledges
the ids it agreed to, then sends `notifications/tasks`, the task's whole record
(what tasks/get would say), at each change. FastMCP 4 does not; `Push(server)`
does, for any FastMCP server with the TasksExtension, from what Docket already
publishes for every run (its state and progress channels, in the store: on
Redis, every process hears every other's). Optional by the spec: a server that
never pushes is conformant, and the lesson's `listen` recipe falls back to polling.

Built on internals, pinned by the locks: fastmcp-tasks' task lookup
(`_lookup_task`, `tasks_get`), the server's Docket (`server._docket`), Docket's
pub/sub connection (`docket._pubsub`) and FastMCP's low-level server, where
`subscriptions/listen` is registered (an extension may not bind a spec method).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from docket._redis import RedisError
from fastmcp import FastMCP
from fastmcp.server.dependencies import bind_request_context
from fastmcp.server.extensions import read_client_extension_settings
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID
from fastmcp_tasks.context import get_task_scope
from fastmcp_tasks.handlers import _lookup_task, tasks_get
from fastmcp_tasks.keys import leg_execution_key, leg_number_from_key, parse_task_key
from fastmcp_tasks.models import missing_capability_error_data
from mcp.shared.exceptions import MCPError
from mcp_types import (INTERNAL_ERROR, INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY,
                       SubscriptionsListenRequestParams, SubscriptionsListenResult)
from pydantic import BaseModel

from tasks_demo import TERMINAL

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"  # on every frame of a stream
# A run's states in order: an event of an earlier one than this stream told is stale.
STAGES = {"scheduled": 0, "queued": 1, "running": 2, "completed": 3, "failed": 3,
          "cancelled": 3}


class Frame(BaseModel):
    """A notification on a listen stream: its method and params, as they go on the wire."""
    method: str
    params: dict


@dataclass
class Watched:
    """What one stream last told of one task: so it sends changes only, never an event
    older than one it told (a run that starts again, elsewhere, starts from step 1)."""
    task_id: str
    record: dict  # the last frame's params
    leg: int  # a task that asked a question runs again as leg 2, 3…
    progress_at: datetime | None = None  # the newest progress applied (the worker's clock)
    stage: int = 0  # how far the leg's run was, in STAGES, when last told
    answered: frozenset = frozenset()  # questions this stream told, and a leg since began


class Push:
    """Serve `subscriptions/listen` for tasks on `server`. One pub/sub connection a
    process, whatever the listeners, subscribed to the channels of the tasks they
    watch; at most `reads` store reads at once; each stream's backlog bounded:
    `backlog` changes unsent, or a frame unsent for `send_within` s, and that
    stream is dropped (its client listens again)."""

    def __init__(self, server: FastMCP, backlog: int = 1000, send_within: float = 10.0,
                 most_ids: int = 100, reads: int = 20):
        self.server, self.backlog, self.send_within, self.most_ids = (
            server, backlog, send_within, most_ids)
        self.watching: dict[tuple[str | None, str], set[asyncio.Queue]] = {}
        self.channels: dict[str, int] = {}  # → how many streams need it
        self.unconfirmed: dict[str, deque[asyncio.Event]] = {}
        self.pubsub: Any = None
        self.relaying: asyncio.Task | None = None
        self.connected = asyncio.Event()  # subscriptions can be made
        self.reading = asyncio.Semaphore(reads)  # store reads at once, whatever the streams
        self.closing = asyncio.Event()
        server._mcp_server.add_request_handler("subscriptions/listen",
                                               SubscriptionsListenRequestParams, self.stream)

    def channels_of(self, key: str) -> list[str]:
        """A run's channels, and its next leg's (a question answered: the task runs again)."""
        leg, base = leg_number_from_key(key), key.split("#")[0]
        return [self.server._docket.key(f"{kind}:{leg_execution_key(base, n)}")
                for n in (leg, leg + 1) for kind in ("state", "progress", "cancel")]

    async def relay(self) -> None:
        """Relay what Docket publishes on the watched channels to the streams watching."""
        docket = self.server._docket
        while True:
            try:
                async with docket._pubsub() as pubsub:
                    # A channel of our own: subscribed from the start, as redis-py needs.
                    channels = [docket.key("push"), *self.channels]
                    await pubsub.subscribe(*channels)
                    self.pubsub, resubscribed = pubsub, len(channels)
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        kind, channel = message["type"], message["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else channel
                        if kind == "subscribe":
                            if self.unconfirmed.get(channel):
                                self.unconfirmed[channel].popleft().set()
                                if not self.unconfirmed[channel]:
                                    del self.unconfirmed[channel]
                            resubscribed -= 1
                            if resubscribed == 0:  # all ours again: catch up what passed
                                self.connected.set()
                                for queues in list(self.watching.values()):
                                    for queue in queues:
                                        self.enqueue(queue, ("refetch", None, None))
                        elif kind == "message":
                            self.route(channel, message["data"])
            except (RedisError, OSError):  # the store blinked: listen again, then catch up
                self.connected.clear()
                self.pubsub = None
                await asyncio.sleep(0.5)

    def route(self, channel: str, data: Any) -> None:
        kind, _, key = channel[len(self.server._docket.key("")):].partition(":")
        parts = parse_task_key(key)
        for queue in self.watching.get((parts["task_scope"], parts["client_task_id"]), ()):
            self.enqueue(queue, (kind, key, data))

    def enqueue(self, queue: asyncio.Queue, event: tuple) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:  # a listener that stopped reading: never the others' wait
            queue.dropped = True  # type: ignore[attr-defined]

    async def subscribe(self, channels: list[str]) -> None:
        """Be on `channels` (confirmed: nothing they carry from now on is missed)."""
        new = [c for c in channels if self.channels.get(c, 0) == 0]
        for channel in channels:
            self.channels[channel] = self.channels.get(channel, 0) + 1
        confirmed = [asyncio.Event() for _ in new]
        for channel, event in zip(new, confirmed):
            self.unconfirmed.setdefault(channel, deque()).append(event)
        if new and self.pubsub is not None:  # (reconnecting: `relay` subscribes them all)
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.subscribe(*new)
        for event in confirmed:
            await event.wait()

    async def unsubscribe(self, channels: list[str]) -> None:
        gone = []
        for channel in channels:
            self.channels[channel] -= 1
            if self.channels[channel] == 0:
                del self.channels[channel]
                gone.append(channel)
        if gone and self.pubsub is not None:
            with contextlib.suppress(RedisError, OSError):  # reconnecting: it subscribes anew
                await self.pubsub.unsubscribe(*gone)

    async def stream(self, ctx: Any, params: SubscriptionsListenRequestParams
                     ) -> SubscriptionsListenResult:
        """One listen stream: the ack, each task's record as it stands, then each change."""
        meta = {SUBSCRIPTION_ID: ctx.request_id}
        asked = (params.notifications.model_extra or {}).get("taskIds")
        if asked is not None and read_client_extension_settings(ctx, TASKS_EXTENSION_ID) is None:
            raise MCPError(MISSING_REQUIRED_CLIENT_CAPABILITY,
                           f"task notifications need the {TASKS_EXTENSION_ID} extension: "
                           "declare it in this request's clientCapabilities",
                           data=missing_capability_error_data())
        asked = [] if asked is None else asked
        if not isinstance(asked, list) or not all(isinstance(i, str) for i in asked) \
                or len(asked) > self.most_ids:
            raise MCPError(INVALID_PARAMS, f"taskIds: a list of at most {self.most_ids} ids")
        queue: asyncio.Queue = asyncio.Queue(self.backlog)
        queue.dropped = False  # type: ignore[attr-defined]
        watched: dict[str, Watched] = {}
        subscribed: list[str] = []
        with bind_request_context(ctx):
            scope = get_task_scope()
            try:
                if self.relaying is None:
                    self.relaying = asyncio.create_task(self.relay())
                try:
                    await asyncio.wait_for(self.connected.wait(), self.send_within)
                except asyncio.TimeoutError:
                    raise MCPError(INTERNAL_ERROR, "task store unavailable: push could not "
                                   f"subscribe within {self.send_within:.0f} s") from None
                for task_id in dict.fromkeys(asked):
                    try:  # another's, unknown, expired: left out of the ack, unsaid
                        async with self.reading:
                            execution, *_ = await _lookup_task(self.server._docket, scope,
                                                               task_id)
                    except MCPError:
                        continue
                    self.watching.setdefault((scope, task_id), set()).add(queue)
                    subscribed += (channels := self.channels_of(execution.key))
                    await self.subscribe(channels)
                    watched[task_id] = await self.current(task_id, scope)  # after: none missed
                await self.send(ctx, "notifications/subscriptions/acknowledged",
                                {"notifications": {"taskIds": list(watched)}, "_meta": meta})
                for seen in watched.values():  # where each stands now: no replay in the spec
                    await self.send(ctx, "notifications/tasks", {**seen.record, "_meta": meta})
                while watched and not self.closing.is_set():  # (nothing agreed: end at once)
                    get = asyncio.ensure_future(queue.get())
                    closing = asyncio.ensure_future(self.closing.wait())
                    try:  # (a client that leaves cancels us here: neither may outlive it)
                        await asyncio.wait({get, closing}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        closing.cancel()
                        get.cancel()
                    if not get.done() or get.cancelled():
                        break
                    if queue.dropped:  # type: ignore[attr-defined]
                        raise MCPError(INVALID_PARAMS, "listen stream dropped: its client "
                                       f"fell {self.backlog} changes behind; listen again")
                    kind, key, data = get.result()
                    for seen in ([watched[parse_task_key(key)["client_task_id"]]] if key
                                 else list(watched.values())):
                        if key and leg_number_from_key(key) > seen.leg:  # the next leg's next
                            subscribed += (channels := self.channels_of(key))
                            await self.subscribe(channels)
                        record = await self.change(seen, kind, key, data)
                        if record is not None:
                            await self.send(ctx, "notifications/tasks", {**record, "_meta": meta})
            finally:
                for task_id in watched:
                    self.watching[(scope, task_id)].discard(queue)
                    if not self.watching[(scope, task_id)]:
                        del self.watching[(scope, task_id)]
                await self.unsubscribe(subscribed)
        return SubscriptionsListenResult(_meta=meta)

    async def send(self, ctx: Any, method: str, params: dict) -> None:
        try:
            await asyncio.wait_for(ctx.session.send_notification(
                Frame(method=method, params=params), related_request_id=ctx.request_id),
                self.send_within)
        except asyncio.TimeoutError:  # a client that stopped reading
            raise MCPError(INVALID_PARAMS, f"listen stream dropped: a frame unsent for "
                           f"{self.send_within:.0f} s (its client stopped reading); "
                           "listen again") from None

    async def current(self, task_id: str, scope: str | None) -> Watched:
        """The task's record now, as tasks/get gives it (this caller's scope decides
        what it may see), and where its progress stood when read."""
        async with self.reading:
            execution, _, leg, _, _ = await _lookup_task(self.server._docket, scope, task_id)
        record = await self.record(task_id)
        async with self.reading:
            await execution.sync()  # read after: as new as the record, or newer
        seen = Watched(task_id, record, leg, execution.progress.updated_at,
                       stage=STAGES.get(execution.state.value, 0))
        if record["status"] == "working":
            seen.record = {**record, "statusMessage": execution.progress.message}
        return seen

    async def record(self, task_id: str) -> dict:
        async with self.reading:
            got = await tasks_get(self.server, task_id)
        return got.model_dump(by_alias=True, mode="json", exclude_none=True,
                              exclude={"result_type", "meta"})

    async def change(self, seen: Watched, kind: str, key: str | None, data: Any
                     ) -> dict | None:
        """The record one event makes for one stream, or None: nothing new to tell."""
        if seen.record["status"] in TERMINAL:
            return None  # a final record never changes
        leg = leg_number_from_key(key) if key else seen.leg
        if leg < seen.leg:
            return None  # a run before the last answer
        record = {k: v for k, v in seen.record.items()
                  if k not in ("statusMessage", "inputRequests", "result", "error")}
        if leg > seen.leg:  # the client answered: the task runs again, from its start
            seen.leg, seen.progress_at, seen.stage = leg, None, 0
            seen.answered |= set(seen.record.get("inputRequests", ()))
        elif seen.record["status"] == "working" and "statusMessage" in seen.record:
            record["statusMessage"] = seen.record["statusMessage"]
        event = json.loads(data) if kind in ("state", "progress") else {}
        if kind == "progress":
            at = datetime.fromisoformat(event["updated_at"])
            if seen.stage == STAGES["completed"] or (seen.progress_at is not None
                                                     and at <= seen.progress_at):
                return None  # older than what this stream has told (an ended run's, say)
            seen.progress_at = at
            record = {**record, "status": "working", "statusMessage": event["message"],
                      "lastUpdatedAt": event["updated_at"]}
        elif kind == "state" and STAGES[event["state"]] < seen.stage:
            return None  # older than what this stream has told
        elif kind == "state" and STAGES[event["state"]] < 3:
            seen.stage = STAGES[event["state"]]
            record["status"] = "working"
        else:  # ended, asked, cancelled, or deaf a while: what tasks/get says now
            seen.stage = STAGES.get(event.get("state"), seen.stage)
            record = await self.record(seen.task_id)
            for _ in range(20):  # (fastmcp-tasks starts the next leg, then points tasks/get
                # at it: in between it still shows the question answered. Not told again.)
                if not set(record.get("inputRequests", ())) & seen.answered:
                    break
                await asyncio.sleep(0.05)
                record = await self.record(seen.task_id)
            else:
                return None
        changed = {k: v for k, v in record.items() if k != "lastUpdatedAt"} != {
            k: v for k, v in seen.record.items() if k != "lastUpdatedAt"}
        seen.record = record
        return record if changed else None

    def close(self) -> None:
        """End every stream gracefully (its final frame: the listen's result): a drain."""
        self.closing.set()
