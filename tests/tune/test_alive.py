"""A running search's sign of life: --resume refuses a study that is being searched now."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import optuna
import pytest

from kaon.errors import ConfigError
from kaon.tune import alive, study
from kaon.tune.study import storage


def _study(sign: dict[str, object] | None) -> optuna.Study:
    made = optuna.create_study(storage=storage(), study_name="tune-live")
    made.set_user_attr(alive.KEY, sign)
    return optuna.load_study(study_name="tune-live", storage=storage())


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_resume_refuses_a_study_a_live_search_is_running() -> None:
    _study({"at": time.time(), "host": socket.gethostname(), "pid": os.getpid()})
    with pytest.raises(ConfigError, match="is being searched now") as refused:
        study.resume("tune-live")
    assert f"process {os.getpid()} on {socket.gethostname()}" in refused.value.message
    assert f"kill {os.getpid()}" in (refused.value.hint or "")


@pytest.mark.parametrize(("sign", "running"), [
    ({"at": "now", "host": "elsewhere", "pid": 1}, True),  # another machine: only its age says
    ({"at": "now", "host": "here", "pid": "dead"}, False),  # killed outright, on this machine
    ({"at": "old", "host": "elsewhere", "pid": 1}, False),  # a sign gone stale
    (None, False),  # ended (and cleared its sign), or never started
])
def test_whether_a_search_is_running_comes_from_its_sign_and_its_process(
        sign: dict[str, object] | None, running: bool) -> None:
    if sign is not None:
        sign = {"at": time.time() - (alive.STALE_S + 5 if sign["at"] == "old" else 1),
                "host": socket.gethostname() if sign["host"] == "here" else sign["host"],
                "pid": _dead_pid() if sign["pid"] == "dead" else sign["pid"]}
    assert (alive.running_elsewhere(_study(sign)) is not None) is running


def test_a_search_keeps_its_sign_fresh_and_clears_it_when_it_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alive, "EVERY_S", 0.05)
    made = _study(None)
    with alive.kept_alive(made):
        first = made.user_attrs[alive.KEY]
        assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
        deadline = time.monotonic() + 10  # a refresh every 0.05 s, on a busy machine
        while made.user_attrs[alive.KEY]["at"] == first["at"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert made.user_attrs[alive.KEY]["at"] > first["at"]
        assert alive.running_elsewhere(made) is not None
    assert made.user_attrs[alive.KEY] is None
    assert alive.running_elsewhere(made) is None


def test_of_two_resumes_at_once_only_the_last_to_claim_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both checked before either wrote its sign: each writes, waits, and reads the sign
    back; the one whose sign was overwritten refuses (the other search is alive)."""
    made = _study(None)

    def other_claims(_: float) -> None:  # the other resume writes while this one waits
        made.set_user_attr(alive.KEY, {"at": time.time(), "host": "elsewhere", "pid": 1})

    monkeypatch.setattr(alive.time, "sleep", other_claims)
    with pytest.raises(ConfigError, match="is being searched now"), \
            alive.kept_alive(made, claim=True):
        pytest.fail("the second claim went on")
