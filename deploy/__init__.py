"""The kit: the lesson's server (tasks_demo.py) carried past one machine.

For the developer who deploys. It imports the tools from tasks_demo.py and adds
what one process in memory does not need: commit-once on Redis (commit.py),
HTTP hardening (http.py), the store's faults named (store.py), `serve`,
`worker` and `queue` (serving.py), the `task` client (client.py), the process
stories (stories.py, research.py), `bench` (bench.py) and their command line
(cli.py), reached through `tasks_demo.py`: `uv run tasks_demo.py serve ...`.
"""


class DemoError(Exception):
    """Something to report in one line, without a traceback."""
