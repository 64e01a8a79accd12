"""Schemathesis fuzzes every operation of the control API with a valid admin key: whatever
it sends (valid and invalid data), no answer is a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from kaon.platform.api import create_control_app  # noqa: E402

schema = schemathesis.openapi.from_asgi("/openapi.json", create_control_app(rate_limit=False))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_secret}"},
                           checks=[not_a_server_error])
