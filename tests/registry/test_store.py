"""The model registry: versions, aliases, lineage, metrics, deletion and safe names."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kaon.errors import ConfigError, NotFoundError
from kaon.registry import (
    delete,
    get,
    list_models,
    parse_ref,
    remove_alias,
    set_alias,
    update_metrics,
)
from kaon.registry.artifacts import sha256_file
from tests.registry.fixtures import MNIST_SIGNATURE, register_tiny


# ---- references ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("ref", "parsed"), [
    ("mnist-mlp", ("mnist-mlp", None, None)),
    ("mnist-mlp:3", ("mnist-mlp", 3, None)),
    ("mnist-mlp@production", ("mnist-mlp", None, "production")),
    ("  mnist-mlp:12 ", ("mnist-mlp", 12, None)),
])
def test_parse_ref_splits_name_version_and_alias(
        ref: str, parsed: tuple[str, int | None, str | None]) -> None:
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["", "a:b:c", "m:1@prod", "m:x", "Upper", "../etc", "a/b"])
def test_parse_ref_refuses_malformed_references(ref: str) -> None:
    with pytest.raises(ConfigError, match="is not a model reference"):
        parse_ref(ref)


# ---- versions -----------------------------------------------------------------------------------
def test_first_registration_is_version_1_and_each_next_one_increments() -> None:
    assert [register_tiny("digits").version for _ in range(3)] == [1, 2, 3]


def test_versions_are_numbered_per_model() -> None:
    register_tiny("a")
    register_tiny("a")
    assert register_tiny("b").version == 1


def test_a_bare_name_resolves_to_the_latest_version() -> None:
    register_tiny("digits")
    second = register_tiny("digits", seed=1)
    assert get("digits").id == second.id
    assert get("digits:1").version == 1


def test_registration_records_signature_spec_and_the_artifact_hash() -> None:
    info = register_tiny("digits", metrics={"test_accuracy": 0.5}, run_id="run-1")
    again = get("digits:1")
    assert again.signature == MNIST_SIGNATURE
    assert again.spec["model"]["family"] == "mlp"
    assert again.metrics == {"test_accuracy": 0.5} and again.run_id == "run-1"
    assert again.artifact == info.artifact and again.artifact.suffix == ".safetensors"
    assert again.sha256 == sha256_file(again.artifact)
    assert again.size_bytes == again.artifact.stat().st_size


def test_each_version_has_its_own_artifact_under_kaon_home(kaon_home: Path) -> None:
    first, second = register_tiny("digits"), register_tiny("digits", seed=1)
    folder = kaon_home / "models" / "default" / "digits"
    assert first.artifact == folder / "v1" / "model.safetensors"
    assert second.artifact.parent.name == "v2"
    assert first.sha256 != second.sha256


def test_list_models_orders_by_name_then_version() -> None:
    register_tiny("zeta")
    register_tiny("alpha")
    register_tiny("zeta")
    assert [i.ref for i in list_models()] == ["alpha:1", "zeta:1", "zeta:2"]


def test_models_in_another_workspace_are_invisible() -> None:
    register_tiny("digits", workspace="team-b")
    assert list_models() == []
    assert [i.ref for i in list_models("team-b")] == ["digits:1"]
    with pytest.raises(NotFoundError):
        get("digits")


def test_to_dict_is_json_serialisable() -> None:
    payload = json.loads(json.dumps(register_tiny("digits", alias="prod").to_dict()))
    assert payload["name"] == "digits" and payload["version"] == 1
    assert payload["aliases"] == ["prod"]
    assert payload["signature"]["shape"] == [1, 28, 28]


def test_created_at_is_timezone_aware_when_read_back() -> None:
    register_tiny("digits")
    assert get("digits:1").created_at.tzinfo is not None


# ---- aliases ------------------------------------------------------------------------------------
def test_alias_given_at_registration_points_at_that_version() -> None:
    register_tiny("digits", alias="production")
    info = get("digits@production")
    assert info.version == 1 and info.aliases == ("production",)


def test_set_alias_moves_it_from_the_old_version_to_the_new_one() -> None:
    register_tiny("digits", alias="production")
    register_tiny("digits")
    moved = set_alias("digits:2", "production")
    assert moved.aliases == ("production",)
    assert get("digits@production").version == 2
    assert get("digits:1").aliases == ()


def test_registering_with_an_existing_alias_moves_it_to_the_new_version() -> None:
    register_tiny("digits", alias="latest")
    register_tiny("digits", alias="latest")
    assert get("digits@latest").version == 2
    assert get("digits:1").aliases == ()


def test_a_version_can_carry_several_aliases_listed_alphabetically() -> None:
    register_tiny("digits")
    set_alias("digits:1", "staging")
    assert set_alias("digits:1", "production").aliases == ("production", "staging")


def test_remove_alias_makes_the_alias_unknown() -> None:
    register_tiny("digits", alias="production")
    remove_alias("digits", "production")
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        get("digits@production")
    assert get("digits:1").aliases == ()


# ---- lineage ------------------------------------------------------------------------------------
def test_parent_records_lineage_by_reference() -> None:
    register_tiny("base")
    child = register_tiny("finetuned", parent="base:1")
    assert child.parent == "base:1"
    assert get("finetuned").parent == "base:1"


def test_parent_may_be_given_as_an_alias_and_is_stored_as_a_version() -> None:
    register_tiny("base")
    register_tiny("base", alias="production")
    assert register_tiny("finetuned", parent="base@production").parent == "base:2"


def test_other_origins_are_recorded_as_free_form_lineage() -> None:
    register_tiny("tuned", lineage={"study": "tune-abc", "trial": 12})
    info = get("tuned")
    assert info.lineage == {"study": "tune-abc", "trial": 12}
    assert info.parent is None
    assert info.to_dict()["lineage"] == {"study": "tune-abc", "trial": 12}


def test_unknown_parent_is_refused_and_nothing_is_registered() -> None:
    register_tiny("base")
    with pytest.raises(NotFoundError, match="has no version 7"):
        register_tiny("finetuned", parent="base:7")
    assert [i.ref for i in list_models()] == ["base:1"]


def test_deleting_the_parent_leaves_the_child_without_a_parent() -> None:
    register_tiny("base")
    register_tiny("finetuned", parent="base:1")
    delete("base")
    assert get("finetuned:1").parent is None


# ---- not found: the message lists what exists ---------------------------------------------------
def test_unknown_model_lists_the_known_models() -> None:
    register_tiny("alpha")
    register_tiny("beta")
    with pytest.raises(NotFoundError, match=r"No model named 'gamma'\. Known models: alpha, beta"):
        get("gamma")


def test_unknown_model_in_an_empty_registry_says_none() -> None:
    with pytest.raises(NotFoundError, match=r"Known models: \(none\)") as info:
        get("anything")
    assert info.value.hint and "kaon models list" in info.value.hint


def test_unknown_version_lists_the_known_versions() -> None:
    register_tiny("digits")
    register_tiny("digits")
    with pytest.raises(NotFoundError, match=r"has no version 5\. Known versions: 1, 2"):
        get("digits:5")


def test_unknown_alias_lists_the_known_aliases() -> None:
    register_tiny("digits", alias="staging")
    set_alias("digits:1", "canary")
    with pytest.raises(NotFoundError, match=r"no alias 'prod'\. Known aliases: canary, staging"):
        get("digits@prod")


def test_removing_an_unknown_alias_is_not_found() -> None:
    register_tiny("digits")
    with pytest.raises(NotFoundError, match="no alias 'ghost'"):
        remove_alias("digits", "ghost")


def test_aliasing_an_unknown_version_is_not_found() -> None:
    register_tiny("digits")
    with pytest.raises(NotFoundError, match="Known versions: 1"):
        set_alias("digits:2", "production")


# ---- names that must never reach the file system or SQL -----------------------------------------
UNSAFE_NAMES = ["../escape", "a/../../b", "x'; DROP TABLE models;--", "name with spaces",
                "UPPER", "-leading-dash", "", "a" * 65, "tab\tname"]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_model_names_are_refused(name: str, kaon_home: Path) -> None:
    register_tiny("safe")
    with pytest.raises(ConfigError, match="is not allowed"):
        register_tiny(name)
    assert [i.ref for i in list_models()] == ["safe:1"]
    assert sorted(p.name for p in (kaon_home / "models" / "default").iterdir()) == ["safe"]


@pytest.mark.parametrize("alias", ["../prod", "prod'--", "Prod"])
def test_unsafe_aliases_are_refused(alias: str) -> None:
    register_tiny("digits")
    with pytest.raises(ConfigError, match=r"alias .* is not allowed"):
        set_alias("digits:1", alias)


@pytest.mark.parametrize("ref", ["x'; DROP TABLE models;--", "../../etc/passwd"])
def test_sql_or_path_fragments_in_a_reference_are_config_errors(ref: str) -> None:
    register_tiny("digits")
    with pytest.raises(ConfigError):
        get(ref)
    assert get("digits").version == 1


def test_a_model_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError):
        register_tiny("digits\n")


# ---- metrics ------------------------------------------------------------------------------------
def test_update_metrics_merges_into_the_existing_metrics() -> None:
    register_tiny("digits", metrics={"val_accuracy": 0.9, "test_accuracy": 0.1})
    updated = update_metrics("digits:1", {"test_accuracy": 0.8, "test_loss": 0.5})
    assert updated.metrics == {"val_accuracy": 0.9, "test_accuracy": 0.8, "test_loss": 0.5}
    assert get("digits:1").metrics == updated.metrics


# ---- deletion -----------------------------------------------------------------------------------
def test_deleting_a_version_removes_it_and_its_folder_but_keeps_the_others() -> None:
    first = register_tiny("digits")
    second = register_tiny("digits")
    assert delete("digits:2") == ["digits:2"]
    assert not second.artifact.parent.exists()
    assert first.artifact.is_file()
    assert [i.ref for i in list_models()] == ["digits:1"]


def test_deleting_by_alias_removes_the_version_it_points_at() -> None:
    register_tiny("digits")
    register_tiny("digits", alias="broken")
    assert delete("digits@broken") == ["digits:2"]
    with pytest.raises(NotFoundError, match="no alias 'broken'"):
        get("digits@broken")


def test_deleting_a_version_drops_the_aliases_that_pointed_at_it() -> None:
    register_tiny("digits", alias="production")
    register_tiny("digits")
    delete("digits:1")
    with pytest.raises(NotFoundError, match=r"Known aliases: \(none\)"):
        get("digits@production")


def test_deleting_a_bare_name_removes_every_version_and_the_folder(kaon_home: Path) -> None:
    register_tiny("digits", alias="production")
    register_tiny("digits")
    register_tiny("other")
    assert delete("digits") == ["digits:1", "digits:2"]
    assert not (kaon_home / "models" / "default" / "digits").exists()
    assert [i.ref for i in list_models()] == ["other:1"]
    with pytest.raises(NotFoundError, match="Known models: other"):
        get("digits")


def test_deleting_an_unknown_model_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        delete("ghost")


def test_a_deleted_version_number_is_never_reused() -> None:
    register_tiny("digits")
    register_tiny("digits")
    delete("digits:2")
    assert register_tiny("digits").version == 3


def test_concurrent_registrations_get_distinct_versions_with_intact_weights() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from kaon.registry.artifacts import load_weights

    with ThreadPoolExecutor(6) as pool:
        infos = list(pool.map(lambda seed: register_tiny("race", seed=seed), range(6)))
    assert sorted(i.version for i in infos) == [1, 2, 3, 4, 5, 6]
    for info in infos:
        load_weights(info.artifact, info.sha256)  # refuses a file another writer replaced


def test_stored_bytes_are_metered_only_for_platform_workspaces(kaon_home: Path) -> None:
    from kaon.db.engine import session_scope
    from kaon.platform import metering
    from kaon.platform.workspaces import bootstrap

    first = register_tiny("plain")  # no workspace record yet: plain local use, nothing metered
    with session_scope() as s:
        bootstrap(s)
        period = time.strftime("%Y-%m", time.gmtime())
        assert metering.usage(s, "default", period).get("storage_bytes", 0) == 0
    second = register_tiny("plain")
    with session_scope() as s:
        stored = metering.usage(s, "default", period)["storage_bytes"]
    assert stored == second.size_bytes and first.version == 1


def test_a_hard_capped_workspace_keeps_no_version_past_its_storage(kaon_home: Path) -> None:
    """What a training job's registration does in a free workspace whose storage is all but
    full: refused like an upload, with what to do, and nothing kept; a plan without a hard
    cap stores it."""
    from sqlalchemy import update

    from kaon.db.engine import session_scope
    from kaon.platform import billing, metering
    from kaon.platform.errors import QuotaExceeded
    from kaon.platform.models import UsageCounter
    from kaon.platform.workspaces import bootstrap

    with session_scope() as s:
        bootstrap(s)
        limit = billing.current_plan(s, "default").storage_bytes
        metering.record(s, "default", "storage_bytes", 1, "seed")  # the level's counter row
        s.execute(update(UsageCounter).where(UsageCounter.period == metering.STORED)
                  .values(used=limit - 1000))
    with pytest.raises(QuotaExceeded) as err:
        register_tiny("full")  # about 25 KB of weights
    message = str(err.value)
    assert "full:1" in message and "free plan's 1,000,000,000 bytes" in message
    assert "Delete model versions" in message and "change to a plan" in message
    assert err.value.http_status == 429 and err.value.hint
    with pytest.raises(NotFoundError):
        get("full")
    assert not (kaon_home / "models" / "default" / "full" / "v1").exists()
    with session_scope() as s:
        assert metering.stored(s, "default") == limit - 1000
        billing.subscribe(s, "default", "pro")
    info = register_tiny("full")
    assert info.version == 1 and info.artifact.is_file()
    with session_scope() as s:
        assert metering.stored(s, "default") == limit - 1000 + info.size_bytes
