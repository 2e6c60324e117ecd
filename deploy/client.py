"""Clients of a `serve` process: the `task` command, and raw HTTP.

`task submit|status|watch|result|cancel|load` talks to a server by URL, with a
deadline on every command; `watch` and `result` read on through a store's
outage (`status` answers once, or names the fault). `rpc` is one request of the
stateless 2026-07-28 protocol, by hand, as any client sends it.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from fastmcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT

from deploy import DemoError
from tasks_demo import (TERMINAL, TIME_LIMIT, Sample, attach, call_tool_task, follow, now,
                        state_of, transitions, wait)


DEFAULT_URL = "http://127.0.0.1:8000/mcp"


# The same tools over streamable HTTP. With memory:// its tasks outlive
# clients but not the server process; with Redis they outlive the server
# too, and worker processes can run them.


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
async def remote(url: str, token: str | None, timeout: float = 30) -> AsyncIterator[Client]:
    """A client of a server in another process, whose failures read as one line.

    No request waits longer than `timeout` for its answer. (An answer that is
    late becomes an event stream with a ping every 15 s, which keeps any read
    timeout from firing: this deadline is on the answer itself.)
    """
    try:
        async with Client(url, auth=token, timeout=timeout) as client:
            yield client
    except MCPError as error:
        if error.error.code == REQUEST_TIMEOUT:
            raise DemoError(f"{url} did not answer within {timeout:.0f} s") from None
        if "not found" in str(error):
            raise DemoError(f"{error}: the id is unknown, expired (a result is kept "
                            "15 minutes unless the server's --results-for says otherwise) "
                            "or another tenant's; check it and --token") from None
        status = await asyncio.to_thread(http_status, url, token)
        if status in (401, 403):
            raise DemoError(f"{url} refused the token (HTTP {status}): check --token") from None
        raise DemoError(f"{url}: {error}") from None
    except (OSError, RuntimeError, httpx2.TransportError) as error:
        if isinstance(error, RuntimeError) and "failed to connect" not in str(error):
            raise
        raise DemoError(f"cannot reach {url} ({error or type(error).__name__}): is "
                        "`tasks_demo.py serve` running there? check --url") from None


REQUEST_DEADLINE = 30.0  # seconds a `task` command waits for any one answer


async def through_outages(read: Callable[[], Awaitable[Any]]) -> Any:
    """Reading a task is safe to repeat: while its store is away (a Redis restart,
    a freeze), say so and read again, for as long as the command's --timeout."""
    while True:
        try:
            return await read()
        except MCPError as error:
            if not str(error).startswith("task store unavailable"):
                raise
            print(f"{error}: reading again", file=sys.stderr, flush=True)
            await asyncio.sleep(1)


async def deadline(command: Callable[[argparse.Namespace], Awaitable[str]],
                   args: argparse.Namespace) -> str:
    """Every `task` command ends by a deadline; one that follows a task, as long
    as a task may run. (And no single request waits over REQUEST_DEADLINE.)"""
    following = args.action in ("watch", "result", "load") or getattr(args, "wait", False)
    args.timeout = args.timeout or (TIME_LIMIT.total_seconds() + 60 if following else 30)
    try:
        return await asyncio.wait_for(command(args), args.timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise DemoError(f"{args.action}: no answer within {args.timeout:.0f} s "
                        "(--timeout)") from None


async def task_command(args: argparse.Namespace) -> str:
    """`task submit|status|watch|result|cancel`: what to print last."""
    if getattr(args, "task_id", None) == "-":
        args.task_id = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if not args.task_id:
            raise DemoError("no task id came on stdin (did the command before | fail?)")
    if args.action == "load":
        return json.dumps(await load(args.url, args.count, args.seconds, args.over, args.poll,
                                     args.token))
    async with remote(args.url, args.token, min(args.timeout, REQUEST_DEADLINE)) as client:
        if args.action == "submit":
            job = {"label": args.label, "seconds": args.seconds, "steps": args.steps}
            task = await call_tool_task(client, "work", job)
            if not args.wait:
                return task.task_id
            print(task.task_id, flush=True)  # first, so that the id is never lost
        else:
            task = await attach(client, args.task_id, "work")
        if args.action == "status":
            status = await task.status()
            return f"{state_of(status)} {status.status_message or ''}".strip()
        if args.action == "cancel":
            await task.cancel()
            return state_of(await task.status())
        if args.action in ("watch", "submit"):
            seen = []

            def show_change(sample: Sample) -> None:  # a line per change, not per poll
                if (sample.state, sample.message) not in seen[-1:]:
                    seen.append((sample.state, sample.message))
                    print(f"{sample.at:6.2f} s  {sample.state:16}  {sample.message or ''}",
                          flush=True)
            t0 = now()
            states = " → ".join(transitions(await through_outages(lambda: follow(
                task, t0, on_sample=show_change, timeout=args.timeout))))
            if args.action == "watch":
                return states
        final = await through_outages(lambda: wait(task, timeout=args.timeout))
        if final.status != "completed":
            why = final.status_message or (final.error or {}).get("message")
            raise DemoError(f"task {task.task_id} ended {final.status}: "
                            f"{why or 'the server gave no reason'}")
        return json.dumps(final.result.get("structuredContent") or final.result["content"])


MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientInfo": {"name": "tasks-demo", "version": "1"},
               "io.modelcontextprotocol/clientCapabilities": {
                   "extensions": {"io.modelcontextprotocol/tasks": {}}}}


def rpc(url: str, method: str, params: dict, name: str | None = None,
        timeout: float = 10, tasks: bool = True, token: str | None = None
        ) -> tuple[int | None, dict, Any]:
    """One request of the stateless protocol: (HTTP status, headers, JSON answer or text).

    `tasks`: the client declares the tasks extension (else a tools/call is a
    plain call). Status None: no connection could be made, so the request
    surely reached no server and is safe to send again. Status 0: the
    connection broke after the request went out; the server may have acted on it.
    """
    meta = MODERN_META if tasks else {**MODERN_META,
                                      "io.modelcontextprotocol/clientCapabilities": {}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": {**params, "_meta": meta}}).encode()
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28", "mcp-method": method,
               **({"mcp-name": name} if name else {}),
               **({"authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer, text = response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        status, answer, text = error.code, error.headers, error.read().decode()
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None, {}, str(error.reason)
        return 0, {}, str(error.reason)
    except (http.client.HTTPException, OSError) as error:
        return 0, {}, str(error)
    try:
        return status, {k.lower(): v for k, v in answer.items()}, json.loads(text)
    except ValueError:
        return status, {k.lower(): v for k, v in answer.items()}, text


async def listened(http: httpx2.AsyncClient, url: str, task_ids: list[str],
                   meta: dict = MODERN_META, token: str | None = None
                   ) -> AsyncIterator[tuple[float, dict]]:
    """`subscriptions/listen` by hand: each frame of the stream as it comes, with when
    (`now()`), the ack first, the listen's own answer last (at the server's close). A
    refusal is that answer alone. Ends when the stream does; bound it from outside."""
    body = json.dumps({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
                       "params": {"notifications": {"taskIds": task_ids}, "_meta": meta}})
    headers = {"content-type": "application/json", "mcp-method": "subscriptions/listen",
               "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28",
               **({"authorization": f"Bearer {token}"} if token else {})}
    async with http.stream("POST", url, content=body, headers=headers,
                           timeout=httpx2.Timeout(10, read=None)) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            yield now(), json.loads(await response.aread())
            return
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                yield now(), json.loads(line[len("data: "):])


async def load(url: str, count: int, seconds: float, over: float, poll: float,
               token: str | None = None) -> dict:
    """`task load`: submit `count` tasks through `url` over `over` seconds; follow each.

    Reading a task is safe to retry, whatever went wrong. A submit is retried
    only when no replica got it (no connection, or the balancer's 503): once
    a request reached a server it may have created a task, and the protocol
    has no idempotency key to tell, so it is counted as unsure instead.
    """
    retried, unsure, submitted_at, ended = 0, [], {}, {}

    async def ask(method: str, params: dict, name: str | None = None) -> dict | None:
        nonlocal retried
        for attempt in range(8):  # ~25 s of back-off: longer than any restart here
            status, _, answer = await asyncio.to_thread(rpc, url, method, params, name,
                                                        token=token)
            broken = not isinstance(answer, dict) or (
                answer.get("error", {}).get("code") == -32603)  # the server's own failure
            if status is not None and 0 < status < 500 and not broken:
                return answer  # an answer, if only "not found"
            if method == "tools/call" and status not in (None, 503):
                return None  # it reached a server: a task may exist
            retried += 1
            await asyncio.sleep(0.1 * 2 ** attempt)
        return None

    async def submit() -> None:
        start = now()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i * over / count - now()))
            answer = await ask("tools/call", {"name": "work", "arguments": {
                "label": f"load-{os.getpid()}-{i}", "seconds": seconds, "steps": 2}}, "work")
            if answer is None or "taskId" not in answer.get("result", {}):
                unsure.append(time.time())  # when: the account tells which fault it met
            else:
                submitted_at[answer["result"]["taskId"]] = now()

    async def follow_all() -> None:  # while submitting, as a real client would
        while not submitting.done() or len(ended) < len(submitted_at):
            for task_id in set(submitted_at) - set(ended):
                answer = await ask("tasks/get", {"taskId": task_id})
                if answer is None:
                    continue  # no answer yet (the store is away): ask again next round
                record = answer.get("result", {})
                state = record.get("status", "lost")  # the server says: not found
                if state in TERMINAL or state == "lost":  # and the result, as first seen
                    ended[task_id] = [state, round(now() - submitted_at[task_id], 3),
                                      record.get("result", {}).get("structuredContent")]
            await asyncio.sleep(poll)

    print("submitting", flush=True)
    submitting = asyncio.create_task(submit())
    await asyncio.gather(submitting, follow_all())
    return {"unsure_submits": unsure, "retried": retried, "ended": ended}
