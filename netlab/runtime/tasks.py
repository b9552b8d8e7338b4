"""The only place asyncio tasks are created: named, and referenced until done.

asyncio keeps only weak references to tasks, so a fire-and-forget task can be collected
mid-flight (mitmproxy ``asyncio_utils`` does the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_running: set[asyncio.Task[Any]] = set()


def create_task(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - the one allowed place
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
