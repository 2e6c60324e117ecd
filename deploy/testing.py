"""What the kit's tests share: services they need, raw requests, the processes they leave."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from deploy import client

ON_CI = bool(os.environ.get("CI"))

# CI installs redis-server and haproxy and must not skip these; elsewhere they skip.
# CI installs redis-server and must not skip these; elsewhere they skip.
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not ON_CI,
    reason="redis-server is not installed (apt-get install redis-server)")


needs_haproxy = pytest.mark.skipif(
    (shutil.which("haproxy") is None or shutil.which("redis-server") is None) and not ON_CI,
    reason="haproxy and redis-server are not installed (apt-get install haproxy redis-server)")


MODERN = client.MODERN_META  # the _meta a 2026-07-28 client sends, with the tasks extension


def rpc(url: str, method: str, params: dict, name: str | None = None) -> tuple[int, dict]:
    status, _, answer = client.rpc(url, method, params, name, timeout=30)
    return status, answer


def said(answer: dict | str) -> str:
    """What an answer says, error or isError result, in one string."""
    if isinstance(answer, str):
        return answer
    if "error" in answer:
        return answer["error"]["message"]
    result = answer["result"]
    return " ".join(c.get("text", "") for c in result.get("content", [])) or json.dumps(result)


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_of(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") \
        / 2**20


def our_children() -> list[int]:
    """Processes this test process started that are still running."""
    pids = []
    for thread in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (thread / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile has no children
            pass
    return [pid for pid in pids if alive(pid)]


def alive(pid: int) -> bool:
    """Gone, or a zombie left to reap, is not running."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
