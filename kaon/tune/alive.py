"""A running search's sign of life, so that ``kaon tune --resume`` never runs a study twice.

While a search runs (its trials, then the final retrain), it writes ``{"at", "host", "pid"}``
to the study's ``alive`` attribute every few seconds, and clears it when it ends, Ctrl-C
included. ``--resume`` refuses a study whose sign of life is fresh and whose process is not
known to be dead: two searches on one study would run its trials twice and register two
models. A search killed outright (``kill -9``, a lost machine) leaves a sign that goes
stale; on the same host its dead process is seen at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import optuna

from kaon.errors import ConfigError

KEY = "alive"
EVERY_S = 5.0  # how often a running search says it is alive
STALE_S = 30.0  # a sign older than this is from a search that is gone
SETTLE_S = 0.5  # how long a resume waits to see whether another one claimed the study too


def _mark(study: optuna.Study) -> None:
    study.set_user_attr(KEY, {"at": time.time(), "host": socket.gethostname(),
                              "pid": os.getpid()})


@contextlib.contextmanager
def kept_alive(study: optuna.Study, claim: bool = False) -> Iterator[None]:
    """Say ``study`` is being searched, every ``EVERY_S`` seconds, until the block ends.

    ``claim`` (``--resume``): first make sure no other search has started on it meanwhile.
    Two resumes that checked at the same moment both write their sign; after ``SETTLE_S``
    only the last one's is there, and the other one refuses. (Optuna's storage is
    thread-safe: the beats need no lock of the search's, and never wait on one.)"""
    _mark(study)
    if claim:
        time.sleep(SETTLE_S)
        sign = study.user_attrs.get(KEY)  # as stored now
        if not isinstance(sign, dict) or (sign.get("host"), sign.get("pid")) != (
                socket.gethostname(), os.getpid()):
            check_not_running(study, sign)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(EVERY_S):
            with contextlib.suppress(Exception):  # a busy database: the next beat
                _mark(study)

    thread = threading.Thread(target=beat, name="kaon-tune-alive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=EVERY_S)
        with contextlib.suppress(Exception):
            study.set_user_attr(KEY, None)


def running_elsewhere(study: optuna.Study) -> str | None:
    """Who is searching ``study`` now ("process P on HOST, N s ago"), or None."""
    return _who(study.user_attrs.get(KEY))


def _who(sign: object) -> str | None:
    """The searcher a sign of life names, if it may still be searching."""
    if not isinstance(sign, dict):
        return None
    age = time.time() - float(sign.get("at", 0.0))
    if age > STALE_S:
        return None
    pid, host = sign.get("pid"), sign.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:  # killed outright: nobody is searching it
            return None
        except PermissionError:  # alive, another user's
            pass
    return f"process {pid} on {host}, {max(age, 0.0):.0f} s ago"


def check_not_running(study: optuna.Study, sign: object = None) -> None:
    """Refuse to continue a study that another search is running now (``sign``: its sign of
    life, when already read)."""
    sign = sign if sign is not None else study.user_attrs.get(KEY)
    who = _who(sign)
    if who is not None:
        assert isinstance(sign, dict)
        pid = sign.get("pid")
        raise ConfigError(
            f"Study {study.study_name} is being searched now ({who}): a second search "
            "would run its trials twice.",
            hint=f"Wait for that search to end, or stop it first (Ctrl-C, or kill {pid}); "
                 f"a search killed outright can be resumed {STALE_S:.0f} s after its last "
                 "sign of life.")
