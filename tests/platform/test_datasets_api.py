"""Workspace datasets over the control API: upload, list, describe, delete, and isolation."""

from __future__ import annotations

import contextlib
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.platform.conftest import bearer
from tests.platform.helpers import TRAIN_SPEC

API = "/api/v1"
NPZ = {"content-type": "application/octet-stream"}


def npz_bytes(classes: tuple[str, ...] = ("cat", "dog"), **extra: Any) -> bytes:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % len(classes)
    arrays = {"train_images": images, "train_labels": labels, "test_images": images[:10],
              "test_labels": labels[:10], "class_names": np.array(classes), **extra}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_workspace_uploads_lists_describes_and_deletes_its_datasets(
        client: Any, admin_secret: str) -> None:
    auth = bearer(admin_secret)
    put = client.put(f"{API}/datasets/pets", headers={**auth, **NPZ}, content=npz_bytes())
    assert put.status_code == 201, put.text
    row = put.json()
    assert (row["name"], row["kind"], row["status"]) == ("pets", "imported", "available")
    assert row["class_names"] == ["cat", "dog"] and row["num_classes"] == 2
    assert row["splits"] == {"train": 40, "test": 10} and row["shape"] == [1, 8, 8]
    assert "location" not in row and "source" not in row  # no server paths
    assert "/" not in row["description"]
    listed = client.get(f"{API}/datasets", headers=auth).json()
    assert listed[0]["name"] == "pets"  # the workspace's own first, then the catalog
    assert {"mnist", "breastmnist"} <= {r["name"] for r in listed if r["kind"] == "catalog"}
    assert client.get(f"{API}/datasets/mnist", headers=auth).json()["kind"] == "catalog"

    again = client.put(f"{API}/datasets/pets", headers={**auth, **NPZ}, content=npz_bytes())
    assert again.status_code == 409 and "overwrite" in again.json()["hint"]
    replaced = client.put(f"{API}/datasets/pets?overwrite=true", headers={**auth, **NPZ},
                          content=npz_bytes(("a", "b", "c")))
    assert replaced.status_code == 201 and replaced.json()["num_classes"] == 3

    actions = [e["action"] for e in client.get(f"{API}/audit", headers=auth).json()]
    assert actions.count("dataset.upload") == 2
    assert client.delete(f"{API}/datasets/pets", headers=auth).status_code == 204
    assert client.get(f"{API}/datasets/pets", headers=auth).status_code == 404
    assert "dataset.delete" in [e["action"] for e in
                                client.get(f"{API}/audit", headers=auth).json()]


def test_another_workspace_neither_sees_nor_touches_a_dataset(client: Any,
                                                              admin_secret: str) -> None:
    a = bearer(admin_secret)
    assert client.put(f"{API}/datasets/pets", headers={**a, **NPZ},
                      content=npz_bytes()).status_code == 201
    other = client.post(f"{API}/workspaces", headers=a, json={"name": "team-d"}).json()
    b = bearer(other["key"]["secret"])
    assert "pets" not in {r["name"] for r in client.get(f"{API}/datasets", headers=b).json()}
    assert client.get(f"{API}/datasets/pets", headers=b).status_code == 404
    assert client.delete(f"{API}/datasets/pets", headers=b).status_code == 404
    job = client.post(f"{API}/jobs", headers=b, json={
        "kind": "train", "spec": {**TRAIN_SPEC, "data": {"dataset": "pets"}}})
    assert job.status_code == 404 and "pets" in job.json()["message"]
    # the same name in B is B's own dataset; A's is untouched
    assert client.put(f"{API}/datasets/pets", headers={**b, **NPZ},
                      content=npz_bytes(("x", "y", "z"))).status_code == 201
    assert client.get(f"{API}/datasets/pets", headers=a).json()["class_names"] == ["cat", "dog"]
    assert client.post(f"{API}/jobs", headers=b, json={
        "kind": "train", "spec": {**TRAIN_SPEC, "data": {"dataset": "pets"}}}).status_code == 201


def test_bad_uploads_are_refused_with_the_reason(client: Any, admin_secret: str) -> None:
    auth = {**bearer(admin_secret), **NPZ}
    empty = client.put(f"{API}/datasets/pets", headers=auth, content=b"")
    assert empty.status_code == 422 and "empty" in empty.json()["message"]
    text = client.put(f"{API}/datasets/pets", headers=auth, content=b"name,label\n")
    assert text.status_code == 422 and "not an .npz" in text.json()["message"]
    pickled = npz_bytes(train_labels=np.array([{"evil": 1}] * 40, dtype=object))
    refused = client.put(f"{API}/datasets/pets", headers=auth, content=pickled)
    assert refused.status_code == 422 and "pickled" in refused.json()["message"]
    missing = io.BytesIO()
    np.savez(missing, images=np.zeros((4, 8, 8), dtype=np.uint8))
    layout = client.put(f"{API}/datasets/pets", headers=auth, content=missing.getvalue())
    assert layout.status_code == 422 and "train_images" in layout.json()["message"]
    assert "upload.npz" not in layout.text and "/tmp" not in layout.text  # no server paths
    no_names = io.BytesIO()  # a label of 2**62 must not mean 2**62 class names
    np.savez(no_names, train_images=np.zeros((4, 8, 8), np.uint8),
             train_labels=np.full(4, 2**62))
    huge = client.put(f"{API}/datasets/pets", headers=auth, content=no_names.getvalue())
    assert huge.status_code == 422 and "classes" in huge.json()["message"]
    short = client.put(f"{API}/datasets/pets", headers=auth, content=npz_bytes(
        ("a",), train_labels=np.arange(40) % 2))
    assert short.status_code == 422 and "class names" in short.json()["message"]
    one = client.put(f"{API}/datasets/pets", headers=auth,
                     content=npz_bytes(train_labels=np.zeros(40, dtype=np.int64)))
    assert one.status_code == 422 and "only one class ('cat')" in one.json()["message"]
    assert client.put(f"{API}/datasets/..%2Fetc", headers=auth,
                      content=npz_bytes()).status_code in (404, 422)
    assert client.put(f"{API}/datasets/Bad%20Name", headers=auth,
                      content=npz_bytes()).status_code == 422
    catalog = client.delete(f"{API}/datasets/mnist", headers=bearer(admin_secret))
    assert catalog.status_code == 404 and "catalog" in catalog.json()["message"]
    assert client.get(f"{API}/datasets", headers=bearer(admin_secret)).json()[0]["kind"] \
        == "catalog"  # nothing was stored by any of these


def test_what_an_upload_inflates_to_is_bounded(client: Any, admin_secret: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kaon.platform.api import data

    monkeypatch.setattr(data, "MAX_UNPACKED", 1000)  # a 40-image upload is ~3 KB unpacked
    put = client.put(f"{API}/datasets/pets", headers={**bearer(admin_secret), **NPZ},
                     content=npz_bytes())
    assert put.status_code == 422 and "unpacks to" in put.json()["message"]


def test_uploading_needs_the_train_scope(client: Any, admin_secret: str) -> None:
    auth = bearer(admin_secret)
    viewer = client.post(f"{API}/keys", headers=auth,
                         json={"name": "ro", "scopes": ["read"]}).json()["secret"]
    put = client.put(f"{API}/datasets/pets", headers={**bearer(viewer), **NPZ},
                     content=npz_bytes())
    assert put.status_code == 403
    assert client.get(f"{API}/datasets", headers=bearer(viewer)).status_code == 200


def test_uploads_are_metered_as_storage_and_a_hard_capped_plan_refuses_past_it(
        client: Any, admin_secret: str, api_db: Any) -> None:
    from sqlalchemy import update

    from kaon.platform.models import UsageCounter
    from kaon.platform.plans import load_plans

    auth = bearer(admin_secret)
    body = npz_bytes()
    assert client.put(f"{API}/datasets/pets", headers={**auth, **NPZ},
                      content=body).status_code == 201
    usage = client.get(f"{API}/usage", headers=auth).json()
    assert usage["plan"] == "free"
    stored = usage["metrics"]["storage_bytes"]["used"]
    assert 40 * 64 < stored < 2 * len(body)  # the unpacked arrays, counted once

    again = client.put(f"{API}/datasets/pets?overwrite=true", headers={**auth, **NPZ},
                       content=body)
    assert again.status_code == 201, again.text
    usage = client.get(f"{API}/usage", headers=auth).json()
    assert usage["metrics"]["storage_bytes"]["used"] == stored  # replaced, not added
    assert client.delete(f"{API}/datasets/pets", headers=auth).status_code == 204
    usage = client.get(f"{API}/usage", headers=auth).json()
    assert usage["metrics"]["storage_bytes"]["used"] == 0  # deleted: given back

    limit = load_plans().plans["free"].storage_bytes  # the free plan is hard-capped
    api_db.execute(update(UsageCounter).where(UsageCounter.metric == "storage_bytes",
                                              UsageCounter.period == "stored")
                   .values(used=limit - 100))  # what is held now, whatever the month
    api_db.commit()
    refused = client.put(f"{API}/datasets/more", headers={**auth, **NPZ}, content=body)
    assert refused.status_code == 429, refused.text
    assert refused.json()["plan"] == "free" and refused.json()["limit"] == limit
    assert client.get(f"{API}/datasets/more", headers=auth).status_code == 404  # not stored
    usage = client.get(f"{API}/usage", headers=auth).json()
    assert usage["metrics"]["storage_bytes"]["used"] == limit - 100  # nothing counted


def _stored(client: Any, auth: dict[str, str]) -> int:
    return int(client.get(f"{API}/usage", headers=auth).json()["metrics"]["storage_bytes"][
        "used"])


def _on_disk(kaon_home: Path, name: str) -> int:
    """The bytes of the files the default workspace's dataset ``name`` is stored as."""
    return sum(f.stat().st_size for f in (kaon_home / "datasets" / name).iterdir())


def test_what_is_metered_is_what_is_stored(client: Any, admin_secret: str, api_db: Any,
                                           kaon_home: Path) -> None:
    """Labels are stored as int64 whatever their type in the upload: uint8 labels take 8
    times their bytes once stored, and the stored bytes are what count, and what the cap
    is checked against."""
    from sqlalchemy import update

    from kaon.platform.models import UsageCounter
    from kaon.platform.plans import load_plans

    auth = bearer(admin_secret)
    n = 20_000
    buffer = io.BytesIO()  # 40 KB of arrays: 1-pixel images, uint8 labels
    np.savez(buffer, train_images=np.zeros((n, 1, 1), np.uint8),
             train_labels=(np.arange(n) % 2).astype(np.uint8))
    body = buffer.getvalue()
    put = client.put(f"{API}/datasets/tiny", headers={**auth, **NPZ}, content=body)
    assert put.status_code == 201, put.text
    assert _stored(client, auth) == _on_disk(kaon_home, "tiny") > 9 * n

    limit = load_plans().plans["free"].storage_bytes
    api_db.execute(update(UsageCounter).where(UsageCounter.metric == "storage_bytes",
                                              UsageCounter.period == "stored")
                   .values(used=limit - 3 * n))  # room for the upload's arrays, not more
    api_db.commit()
    refused = client.put(f"{API}/datasets/more", headers={**auth, **NPZ}, content=body)
    assert refused.status_code == 429, refused.text
    assert client.get(f"{API}/datasets/more", headers=auth).status_code == 404
    assert not (kaon_home / "datasets" / "more").exists()
    assert _stored(client, auth) == limit - 3 * n


@pytest.mark.parametrize("other", ["overwrite", "delete"])
def test_racing_requests_give_back_what_a_dataset_held_once(
        client: Any, admin_secret: str, kaon_home: Path, monkeypatch: pytest.MonkeyPatch,
        other: str) -> None:
    """An ?overwrite=true upload racing another one, or a deletion, on the real app and
    database: reading what the dataset holds and giving it back are one step per request
    (the workspace's lock), so what it held is given back once, not twice."""
    from kaon.platform import metering

    auth = bearer(admin_secret)
    assert client.put(f"{API}/datasets/pets", headers={**auth, **NPZ},
                      content=npz_bytes()).status_code == 201
    small = io.BytesIO()
    np.savez(small, train_images=np.zeros((4, 2, 2), np.uint8), train_labels=np.arange(4) % 2)
    real, gate = metering.stored_by, threading.Barrier(2)

    def in_step(*args: Any, **kwargs: Any) -> int:
        held = real(*args, **kwargs)
        # both read before either writes, unless the lock orders them (then the first
        # waits out the timeout, and the other finds the barrier broken, after its commit)
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait(timeout=1)
        return held

    monkeypatch.setattr(metering, "stored_by", in_step)
    statuses: list[int] = []

    def overwrite() -> None:
        statuses.append(client.put(f"{API}/datasets/pets?overwrite=true",
                                   headers={**auth, **NPZ}, content=small.getvalue())
                        .status_code)

    def delete() -> None:
        statuses.append(client.delete(f"{API}/datasets/pets", headers=auth).status_code)

    threads = [threading.Thread(target=overwrite),
               threading.Thread(target=overwrite if other == "overwrite" else delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(metering, "stored_by", real)
    assert sorted(statuses) == ([201, 201] if other == "overwrite" else [201, 204])
    kept = (kaon_home / "datasets" / "pets").exists()  # deleted last, or replaced last
    assert _stored(client, auth) == (_on_disk(kaon_home, "pets") if kept else 0)


def test_an_upload_past_the_16_mib_body_limit_streams_to_disk(client: Any,
                                                              admin_secret: str) -> None:
    auth = bearer(admin_secret)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (6000, 56, 56), dtype=np.uint8)  # 18.8 MB of noise
    buffer = io.BytesIO()
    np.savez(buffer, train_images=images, train_labels=np.arange(6000) % 2)
    body = buffer.getvalue()
    assert len(body) > 16 * 1024**2  # what any other control-API request may send
    put = client.put(f"{API}/datasets/big", headers={**auth, **NPZ}, content=body)
    assert put.status_code == 201, put.text
    assert put.json()["splits"] == {"train": 6000} and put.json()["shape"] == [1, 56, 56]
    assert client.post(f"{API}/workspaces", headers=auth,
                       content=b"x" * (17 * 1024**2)).status_code == 413  # others still bounded


def test_an_upload_over_the_upload_limit_is_413_declared_or_streamed(
        client: Any, admin_secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaon.platform.api import data

    monkeypatch.setattr(data, "MAX_UPLOAD", 1000)
    auth = bearer(admin_secret)
    declared = client.put(f"{API}/datasets/pets", headers={**auth, **NPZ}, content=npz_bytes())
    assert declared.status_code == 413 and declared.json()["error"] == "PayloadTooLarge"

    def chunks() -> Any:  # no Content-Length: the route counts what arrives
        yield npz_bytes()

    streamed = client.put(f"{API}/datasets/pets", headers={**auth, **NPZ}, content=chunks())
    assert streamed.status_code == 413 and "1,000 bytes" in streamed.json()["message"]
    assert client.get(f"{API}/datasets/pets", headers=auth).status_code == 404


def test_a_slow_upload_holds_no_database_lock(client: Any, admin_secret: str,
                                              kaon_home: Any) -> None:
    import sqlite3

    from kaon.config import get_settings

    if not get_settings().db_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer lock is what a held transaction would block")
    auth = bearer(admin_secret)
    body = npz_bytes()
    writes: list[bool] = []

    def slowly() -> Any:  # the key's first use writes its last-used time before these bytes
        yield body[:100]
        other = sqlite3.connect(kaon_home / "kaon.db", timeout=0.5)
        try:
            with other:
                other.execute("update api_keys set name = name")
            writes.append(True)
        except sqlite3.OperationalError:  # "database is locked"
            writes.append(False)
        finally:
            other.close()
        yield body[100:]

    put = client.put(f"{API}/datasets/pets", headers={**auth, **NPZ}, content=slowly())
    assert put.status_code == 201, put.text
    assert writes == [True]
