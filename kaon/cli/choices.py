"""The values some platform options take, as Enums that typer turns into checked choices:
listed in ``--help``, and a wrong one is refused with the list before any request is sent
(the API's own 422 names its body fields, not the CLI's flags). ``tests/cli/test_choices.py``
keeps them equal to the platform's constants, which are not imported here: they come with
SQLAlchemy, too slow for the CLI's start."""

from __future__ import annotations

from enum import Enum


class Scope(str, Enum):
    inference = "inference"
    train = "train"
    deploy = "deploy"
    read = "read"
    admin = "admin"


class Role(str, Enum):
    owner = "owner"
    admin = "admin"
    member = "member"
    viewer = "viewer"


class JobKind(str, Enum):
    train = "train"
    tune = "tune"


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
