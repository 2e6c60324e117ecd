"""The kit's command line, after the lessons' in `tasks_demo.py --help`.

tasks_demo.py builds the parser with its lessons, then hands it here:
`add_commands` adds the stories, `bench`, `serve`, `worker`, `queue` and `task`,
and `main` runs whichever of them was asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastmcp.exceptions import ToolError
from rich.console import Console

from deploy import DemoError
from deploy.client import DEFAULT_URL
from deploy.processes import LEAVE_ON, leave_now
from deploy.store import RESULTS_FOR, SHARED, shared
from tasks_demo import MAX_SECONDS, MAX_STEPS, claim, runnable


ID_MARK = "id:"  # (how add_commands keeps an id that begins with "-" from looking like a flag)


def http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http:// URL: {text!r}")
    return text


def bounded_text(most: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not 0 < len(text) <= most:
            raise argparse.ArgumentTypeError(f"takes 1 to {most} characters, got {len(text)}")
        return text
    return parse


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", within(int, 1, 65535)(port)


def within(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """Parse a number from `low` to `high`: what the server would accept."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text!r}")
        return value
    return parse


def add_commands(commands: argparse._SubParsersAction, argv: list[str]) -> list[str]:
    """The kit's commands, after the lessons'; `argv` as it is to be parsed."""
    from deploy import stories  # noqa: F401  (it registers its stories)
    from deploy.stories import FAULTS, STORIES

    for name, fn in STORIES.items():
        runnable(commands, name, f"story: {claim(fn)}")
    model_help = ("deep research by a model, any pydantic-ai model string: "
                  "anthropic:claude-sonnet-4-5, google-gla:gemini-2.5-flash, test (offline)")
    commands.choices["research"].add_argument("--model", default="test",
                                              help=model_help + "; default: test")
    soak_command = commands.choices["soak"]
    soak_command.add_argument("--tasks", type=within(int, 1, 100_000), default=120)
    soak_command.add_argument("--clients", type=within(int, 1, 50), default=2,
                              help="client processes, sharing the tasks")
    soak_command.add_argument("--faults", default=",".join(FAULTS),
                              type=lambda text: tuple(text.split(",")),
                              help="which to strike, in order: worker (SIGKILL), replica (SIGKILL), "
                                   "redis (restart), paused (a worker SIGSTOPped past its claim)")
    soak_command.add_argument("--no-persistence", dest="persistent", action="store_false",
                              help="Redis without its append-only file: see what a restart loses")
    bench_help = ("measure: compare, result lag, task overhead, throughput, cold start; a "
                  "failed measurement is marked, the rest kept")
    bench_command = commands.add_parser("bench", help=bench_help, description=bench_help)
    bench_command.add_argument("--quick", action="store_true", help="a smaller run, in seconds")
    bench_command.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench_command.add_argument("--distributed", action="store_true",
                               help="also Redis, HTTP and workers: cost against a minimal "
                                    "server, scaling, polling, memory, push")
    # The pieces the stories are made of, to run by hand in separate terminals.
    serve_command = commands.add_parser("serve", help="serve the tools over HTTP on 127.0.0.1")
    serve_command.add_argument("--port", type=within(int, 1, 65535), default=8000)
    serve_command.add_argument("--host", default="127.0.0.1",
                               help="the address to bind; beyond loopback, use --token")
    serve_command.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                               help="a name clients reach this server by (its Host header); "
                                    "others are refused. Repeat for each")
    serve_command.add_argument("--backend", default="memory://",
                               help="memory:// (this process) or redis://HOST:PORT/DB (shared)")
    serve_command.add_argument("--no-worker", action="store_true",
                               help="accept tasks but leave running them to `worker` processes")
    serve_command.add_argument("--token", action="append", metavar="NAME=TOKEN",
                               help="require bearer tokens; repeat for each client "
                                    "(or TASKS_DEMO_TOKENS=alice=...,bob=...)")
    worker_command = commands.add_parser("worker", help="run tasks for servers on a shared Redis")
    worker_command.add_argument("--backend", required=True, help="redis://HOST:PORT/DB")
    for command in (serve_command, worker_command):
        command.add_argument("--model", help=model_help)
        command.add_argument("--results-for", type=within(int, 1, 7 * 24 * 3600),
                             default=int(RESULTS_FOR.total_seconds()), metavar="SECONDS",
                             help="how long a task's result, or a question it asks, can be "
                                  "read after its step ends (default %(default)s; give every "
                                  "process the same)")
    worker_command.add_argument("--journal", action="store_true",
                                help="also record each body's start and end in Redis (soak)")
    for flag, what in (("--metrics-port", "Docket's Prometheus metrics"),
                       ("--health-port", "a health endpoint (200 while the process answers)")):
        worker_command.add_argument(flag, type=host_port, metavar="[HOST:]PORT",
                                    help=f"serve {what} on this port (HOST: 127.0.0.1)")
    for command in (serve_command, worker_command):
        command.add_argument("--key-file", type=Path, metavar="PATH",
                             help="the key that encrypts task snapshots (the caller's token, "
                                  "every header) in the store; or FASTMCP_TASKS_ENCRYPTION_KEY. "
                                  "The same on every server and worker")
    serve_command.add_argument("--plaintext-snapshots", action="store_true",
                               help="with --token on Redis and no key: store tokens in clear")
    queue_help = "what is queued and running on a shared Redis, and which worker runs it"
    queue_command = commands.add_parser("queue", help=queue_help, description=queue_help)
    queue_command.add_argument("--backend", required=True, help="redis://HOST:PORT/DB")

    task = commands.add_parser("task", help="submit, status, watch, result, cancel, load: "
                                            "a client of a `serve` process, by task id")
    actions = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    client_help = {
        "submit": "submit a work task and print its id (--wait: then follow it to the end)",
        "status": "print a task's state and status message",
        "watch": "follow a task's progress until it ends",
        "result": "wait for a task's result and print it",
        "cancel": "cancel a task",
        "load": "submit many tasks over raw HTTP, follow each, print the account as JSON",
    }
    for name, summary_line in client_help.items():
        command = actions.add_parser(name, help=summary_line, description=summary_line)
        command.add_argument("--url", type=http_url, default=DEFAULT_URL)
        command.add_argument("--token", default=os.environ.get("TASKS_DEMO_TOKEN") or None,
                             type=lambda text: text or None,
                             help="bearer token (or TASKS_DEMO_TOKEN)")
        command.add_argument("--timeout", type=within(float, 0.1, 24 * 3600),
                             help="give up after this many seconds (default: 30, or as "
                                  "long as a task may run for watch, result, submit --wait)")
        if name == "load":
            command.add_argument("--count", type=within(int, 1, 100_000), default=50)
            command.add_argument("--seconds", type=within(float, 0, MAX_SECONDS), default=1.0)
            command.add_argument("--over", type=within(float, 0, 24 * 3600), default=10.0,
                                 help="spread the submissions over this many seconds")
            command.add_argument("--poll", type=within(float, 0.02, 60), default=0.5,
                                 help="seconds between two reads of a task")
        elif name == "submit":
            command.add_argument("--label", default="job", type=bounded_text(100))
            command.add_argument("--seconds", type=within(float, 0, MAX_SECONDS), default=10.0)
            command.add_argument("--steps", type=within(int, 1, MAX_STEPS), default=10)
            command.add_argument("--wait", action="store_true")
        else:
            command.add_argument("task_id", help="the id, or - to read it from stdin "
                                                 "(task submit | task watch -)")
    # An id that begins with "-" (one in 64 do) is still an id, wherever it stands.
    ids = [arg for before, arg in zip(argv[1:], argv[2:]) if re.fullmatch(r"-[\w-]{20,}", arg)
           and not before.startswith("--")] if argv[:1] == ["task"] else []
    return [f"{ID_MARK}{arg}" if arg in ids else arg for arg in argv]


def checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """What argparse cannot check alone, as one-line errors (exit 2)."""
    from deploy.stories import FAULTS

    if getattr(args, "task_id", None):
        args.task_id = args.task_id.removeprefix(ID_MARK)
    if args.command == "soak" and not set(args.faults) <= set(FAULTS):
        parser.error(f"--faults takes some of {','.join(FAULTS)}, got {','.join(args.faults)}")
    backend = getattr(args, "backend", "memory://")
    if urllib.parse.urlsplit(backend).scheme.lower() not in ("memory", *SHARED):
        parser.error(f"--backend takes memory:// or redis://HOST:PORT/DB, got {backend!r}")
    if args.command == "worker" and not shared(backend):
        parser.error("a worker in its own process needs a shared backend: "
                     "--backend redis://HOST:PORT/DB")
    if args.command == "serve" and args.no_worker and not shared(backend):
        parser.error("--no-worker needs a shared backend (--backend redis://...): "
                     "with memory:// nothing else could run the tasks")
    if args.command == "serve":
        args.tokens = {}
        from_env = os.environ.get("TASKS_DEMO_TOKENS")
        for pair in args.token or (from_env.split(",") if from_env else []):
            name, _, token = pair.partition("=")
            if not name or not token:
                parser.error(f"--token takes NAME=TOKEN, got {pair!r}")
            if token in args.tokens:
                parser.error(f"{name} and {args.tokens[token]} were given the same token")
            args.tokens[token] = name
        if not args.host:
            parser.error("--host takes an address, got ''")
    return args


def main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the kit's command in `args`: its exit status."""
    from deploy import model

    args = checked(parser, args)
    try:
        if getattr(args, "model", None):
            model.check_model(args.model)
            if args.command in ("serve", "worker"):
                model.RESEARCH_MODEL = args.model
        if args.command in ("serve", "worker", "queue"):
            from deploy import serving

            if args.command == "serve":
                serving.use_key(args)
                asyncio.run(serving.serve(args.port, args.host, args.backend,
                                          not args.no_worker, args.tokens,
                                          tuple(args.allow_host),
                                          timedelta(seconds=args.results_for)))
            elif args.command == "worker":
                serving.use_key(args)
                asyncio.run(serving.worker(args.backend, args.journal, args.metrics_port,
                                           args.health_port,
                                           timedelta(seconds=args.results_for)))
            else:
                Console(width=None if sys.stdout.isatty() else 160).print(
                    asyncio.run(serving.queue(args.backend)))
            return 0
        for sig in LEAVE_ON:  # nothing to hand over: leave at once, children and all
            signal.signal(sig, leave_now)
        if args.command == "task":
            from deploy.client import deadline, task_command

            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `task watch ID | head`: just stop
            print(asyncio.run(deadline(task_command, args)))
            return 0
        if args.command == "bench":
            from deploy.bench import bench, held, show_bench

            figures = asyncio.run(bench(args.quick, args.distributed))
            wide = Console(width=None if sys.stdout.isatty() else 160)
            print(json.dumps(figures, indent=2)) if args.json else show_bench(wide, figures)
            return 0 if held(figures) else 1
        import logging

        import tasks_demo
        from deploy.stories import STORIES

        for noisy in ("docket", "fastmcp_tasks"):  # a story strikes on purpose
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        options = {k: v for k, v in vars(args).items() if k not in ("command", "scale")}
        story = {args.command: STORIES[args.command]}
        return 0 if asyncio.run(tasks_demo.run(story, args.scale, **options)) else 1
    except (DemoError, ToolError) as error:  # ToolError: a server refused a call
        print(f"tasks_demo.py: error: {error}", file=sys.stderr)
        return 1
