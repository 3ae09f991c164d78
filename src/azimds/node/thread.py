"""A node on a thread of its own in this process, for the test kit and the tests.

The thread runs its own uvloop event loop, as ``azimds serve`` does. Signals stay with the
program (``app.run`` handles them only on the main thread), so ``stop()`` is what ends it.
While the node runs, ``current()`` names it on every thread doing its work (its loop, the
``asyncio.to_thread`` calls it makes), so that log records can be told apart by node.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

import uvloop

from azimds.config.settings import Config
from azimds.store.base import Store

if TYPE_CHECKING:
    from azimds.node.app import Ready

_CURRENT: ContextVar[NodeThread | None] = ContextVar("azimds_node_thread", default=None)


def current() -> NodeThread | None:
    """The node whose work this is, if it runs on a ``NodeThread``."""
    return _CURRENT.get()


class NodeThread:
    """One node, from ``start()`` (it serves) to ``stop()`` (its sockets, store and tasks are
    closed and its thread has ended). ``store``: one to serve from instead of the configured
    one (the test kit's, which already holds signing keys)."""

    def __init__(self, config: Config, store: Store | None = None, name: str = "azimds") -> None:
        self.config = config
        self.failure: BaseException | None = None  # what ended the node, if not stop()
        self._store = store
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started: Ready | None = None
        self._ready = threading.Event()  # set once it serves, or once it has ended
        self._lock = threading.Lock()  # stop() against the loop's start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False

    def start(self, timeout: float) -> Ready:
        """Start the node and wait until it serves. What kept it from serving is raised
        (``ListenError``, ``StateDirInUse``, ``StoreError``...), after the thread has ended."""
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout)
            raise TimeoutError(f"the node did not start within {timeout}s")
        if self._started is None:
            self._thread.join(timeout)
            raise self.failure or RuntimeError("the node stopped before it served")
        return self._started

    def stop(self, timeout: float) -> None:
        """Stop the node and wait for its thread; ``failure`` then says if it had failed."""
        with self._lock:
            self._stopping = True
            if self._loop is not None and self._stop is not None:
                with contextlib.suppress(RuntimeError):  # its loop has closed: it has ended
                    self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the node did not stop within {timeout}s")

    def _run(self) -> None:
        from azimds.node import app  # the composition root, imported only to run

        def ready(started: app.Ready) -> None:
            self._started = started
            self._ready.set()

        async def main() -> None:
            _CURRENT.set(self)  # in this task's context: its tasks and threads inherit it
            with self._lock:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                if self._stopping:
                    self._stop.set()
            await app.run(self.config, on_ready=ready, stop=self._stop, store=self._store)

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
        except BaseException as exc:  # raised by start(), or kept in ``failure``
            self.failure = exc
        finally:
            self._ready.set()
