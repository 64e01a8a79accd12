"""Process helpers: children that do not outlive their parent (replicas, job workers, tuning
trials), the cores a process may use, and a server's heap settled after start-up."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: the kernel sends the child SIGTERM when
    its parent dies, even by ``kill -9`` (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_when_orphaned(code: int) -> None:
    """In a child: exit with ``code`` once its parent is gone (checked every 0.5 s; a daemon
    thread). Unlike ``PR_SET_PDEATHSIG`` this follows the parent process, not the thread that
    started the child, and needs no ``preexec_fn`` in a parent that has threads."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(code)

    threading.Thread(target=watch, name="kaon-parent-watch", daemon=True).start()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's
    ``--cpuset-cpus``), not the host's count, which would oversubscribe a limited process."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def freeze_heap() -> None:
    """Once start-up is over: take everything allocated so far out of the cyclic GC's view.

    torch, FastAPI and the model leave a few hundred thousand long-lived objects; a full
    collection walks all of them, on whichever thread allocates, for 100-200 ms on this
    machine, and that pause lands on requests as tail latency (``gc.freeze``, as Instagram and
    gunicorn's preload users do). Objects made later are still collected.
    """
    gc.collect()
    gc.freeze()
