"""Strict JSON: NaN and infinities become null, at any depth."""

from __future__ import annotations

import json
import math

from kaon import jsonsafe


def test_finite_makes_nan_and_infinities_null_at_any_depth() -> None:
    assert jsonsafe.finite({"a": [1.0, math.nan], "b": (-math.inf,), "c": "x"}) == {
        "a": [1.0, None], "b": [None], "c": "x"}


def test_dumps_writes_what_a_strict_parser_reads() -> None:
    text = jsonsafe.dumps({"auc": math.nan, "n": 3, "when": object}, sort_keys=True)
    assert json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == {
        "auc": None, "n": 3, "when": str(object)}
