"""Process helpers: children that do not outlive their parent (replicas, job workers), and a
server's heap settled after start-up."""

from __future__ import annotations

import ctypes
import gc
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: the kernel sends the child SIGTERM when
    its parent dies, even by ``kill -9`` (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def freeze_heap() -> None:
    """Once start-up is over: take everything allocated so far out of the cyclic GC's view.

    torch, FastAPI and the model leave a few hundred thousand long-lived objects; a full
    collection walks all of them, on whichever thread allocates, for 100-200 ms on this
    machine, and that pause lands on requests as tail latency (``gc.freeze``, as Instagram and
    gunicorn's preload users do). Objects made later are still collected.
    """
    gc.collect()
    gc.freeze()
