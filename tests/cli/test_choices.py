"""The CLI's choices are the platform's own values, and a wrong one is refused by the CLI
with the list (before, the API's 422 named its body fields: ``body.scopes.0``)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kaon.cli.choices import JobKind, JobState, Role, Scope
from kaon.cli.main import app
from kaon.platform.auth import SCOPES
from kaon.platform.models import JOB_KINDS, JOB_STATES, ROLES

runner = CliRunner()


@pytest.mark.parametrize(("choice", "values"), [
    (Scope, SCOPES), (Role, ROLES), (JobKind, JOB_KINDS), (JobState, JOB_STATES)])
def test_the_choices_are_the_platforms_values(choice: type, values: tuple[str, ...]) -> None:
    assert [c.value for c in choice] == list(values)


@pytest.mark.parametrize("args", [
    ["keys", "create", "ci", "--scope", "bogus"],
    ["members", "add", "a@b.com", "--role", "king"],
    ["jobs", "list", "--state", "bogus"],
    ["jobs", "submit", "spec.yaml", "--kind", "foo"],
])
def test_a_wrong_choice_is_a_usage_error_listing_the_right_ones(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and "body." not in result.output
