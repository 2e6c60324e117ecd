"""Processes a story starts (servers, workers, clients, Redis), and their end.

Every child is collected in CHILDREN and killed when its story ends, fails or
is interrupted (Ctrl-C, SIGTERM, SIGHUP: leave_now), with its temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import tasks_demo
from deploy import DemoError
from tasks_demo import now


SCRIPT = str(Path(tasks_demo.__file__).resolve())  # every command runs through it
CHILDREN: list[subprocess.Popen] = []  # processes a story started: none may outlive it
FOLDERS: list[str] = []  # and the temporary folders they used


LEAVE_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `kill`, terminal closed


# A signal that lands while a child is being started (forked, not yet in
# CHILDREN) waits until it is there: else that child would outlive the story.
STARTING: list[int] = []
LEFT: list[int] = []


def leave_now(signum: int = signal.SIGINT, *_: Any) -> None:
    """Ctrl-C where nothing is worth waiting for: exit 128+N, taking the children
    and their folders along (a killed parent's children would run on)."""
    if STARTING:
        LEFT.append(signum)
        return
    for child in CHILDREN:
        child.kill()
    for folder in FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)
    tasks_demo.leave_now(signum)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Child:
    """A process a story started: its output collected, its end guaranteed."""

    def __init__(self, name: str, *command: str, own_group: bool = False):
        self.name, self.lines = name, []
        STARTING.append(1)
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=own_group)
            CHILDREN.append(self.process)
        finally:
            STARTING.pop()
        if LEFT:  # a signal came while it started: now it goes too
            leave_now(LEFT[0])
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    @classmethod
    def demo(cls, name: str, *args: str) -> Child:
        """`tasks_demo.py ARGS...` in a process of its own."""
        return cls(name, sys.executable, SCRIPT, *args)

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

    async def first_line(self, timeout: float = 30) -> str:
        return await self.expect("", timeout)

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
    return await client_process_of(name, "task", *args)


async def client_process_of(name: str, *args: str) -> Child:
    """Run one command of this script in a process of its own, to its end."""
    child = Child.demo(name, *args)
    await child.finish()
    return child


def scrape(metrics_port: int, health_port: int) -> tuple[float, str]:
    """A worker's Prometheus metrics (tasks it completed) and its health answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        completed = sum(float(line.split()[-1]) for line in page.read().decode().splitlines()
                        if line.startswith("docket_tasks_completed_total{"))
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/", timeout=5) as page:
        return completed, page.read().decode()


@asynccontextmanager
async def child_processes() -> AsyncIterator[None]:
    try:
        yield
    finally:
        for child in CHILDREN:
            child.kill()
        for child in CHILDREN:
            child.wait()
        CHILDREN.clear()
        for folder in FOLDERS:
            shutil.rmtree(folder, ignore_errors=True)
        FOLDERS.clear()


def redis_process(port: int, persistent: bool, folder: str) -> Child:
    """redis-server on loopback; `persistent`: an append-only file survives a restart."""
    if shutil.which("redis-server") is None:
        raise DemoError("this story needs Redis: install the redis-server package "
                        "(apt-get install redis-server, brew install redis)")
    return Child("redis", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", folder, "--save", "", "--appendonly", "yes" if persistent else "no")


async def start_redis(persistent: bool = False) -> str:
    port, folder = free_port(), tempfile.mkdtemp(prefix="tasks-demo-redis-")
    FOLDERS.append(folder)
    redis = redis_process(port, persistent, folder)
    await redis.expect("Ready to accept connections")
    return f"redis://127.0.0.1:{port}/0"


async def start_server(*args: str, port: int | None = None) -> tuple[Child, str]:
    """Start `serve` in a process of its own; return once it accepts connections."""
    port = port or free_port()
    server = Child.demo(f"server :{port}", "serve", "--port", str(port), *args)
    return server, (await server.expect("serving http")).split()[1]
