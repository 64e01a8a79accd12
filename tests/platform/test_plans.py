"""Plans load from a versioned TOML file; a broken file names the file and the field."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from kaon.errors import ConfigError
from kaon.platform.plans import DEFAULT_PLANS_FILE, PLANS_ENV, get_catalog, load_plans


def test_the_shipped_file_has_free_pro_and_enterprise() -> None:
    catalog = load_plans(DEFAULT_PLANS_FILE)
    assert catalog.version == 1
    assert set(catalog.plans) == {"free", "pro", "enterprise"}
    free, pro = catalog.get("free"), catalog.get("pro")
    assert free.hard_cap and not pro.hard_cap
    assert catalog.default.name == "free" and pro.name == "pro"
    assert pro.inference_cents_per_request == Decimal("0.01")
    assert isinstance(pro.training_cents_per_second, Decimal)
    assert isinstance(pro.price_cents, int)
    assert pro.has("automl") and not free.has("automl")
    assert pro.included("inference_requests") == pro.included_inference_requests
    assert pro.included("stream_frames") is None


def _write(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "plans.toml"
    path.write_text(DEFAULT_PLANS_FILE.read_text().replace(old, new, 1))
    return path


def test_a_bad_field_is_named_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "rate_limit_rps = 50.0", "rate_limit_rps = 0")
    with pytest.raises(ConfigError) as err:
        load_plans(path)
    assert str(path) in err.value.message
    assert "plans.pro.rate_limit_rps: Input should be greater than 0" in err.value.message


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('inference_cents_per_request = "0.01"', "inference_cents_per_request = 0.01",
     "plans.pro.inference_cents_per_request: write the price as a string"),
    ('storage_cents_per_gb_month = "10"', 'storage_cents_per_gb_month = "ten"',
     "plans.pro.storage_cents_per_gb_month: 'ten' is not a decimal number"),
    ('storage_cents_per_gb_month = "10"', 'storage_cents_per_gb_month = "-1"',
     "plans.pro.storage_cents_per_gb_month: Input should be greater than or equal to 0"),
    ("hard_cap = false\n", "hard_cap = false\nsurprise = 1\n", "plans.pro.surprise: unknown key"),
    ("max_replicas = 4", 'max_replicas = "4"', "plans.pro.max_replicas: Input should be a "
                                                "valid integer"),
    ("version = 1", "version = 2", "version: Input should be 1"),
    ('default_plan = "free"', 'default_plan = "gold"', "default_plan 'gold' is not one of"),
    ("[plans.pro]", "[plans.'Pro Plan']", "plan name 'Pro Plan' must be"),
])
def test_broken_files_refuse_to_load(tmp_path: Path, old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="invalid") as err:
        load_plans(_write(tmp_path, old, new))
    assert expected in err.value.message


def test_unreadable_or_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_plans(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("version = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_plans(tmp_path / "bad.toml")


def test_the_operator_file_is_used_and_reread_when_edited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "price_cents = 4_900", "price_cents = 5_900")
    monkeypatch.setenv(PLANS_ENV, str(path))
    assert get_catalog().get("pro").price_cents == 5900
    time.sleep(0.01)
    path.write_text(path.read_text().replace("price_cents = 5_900", "price_cents = 6_900"))
    assert get_catalog().get("pro").price_cents == 6900
    with pytest.raises(ConfigError, match="Unknown plan 'gold'"):
        get_catalog().get("gold")
