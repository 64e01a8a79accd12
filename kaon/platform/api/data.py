"""Routes: the workspace's own datasets, beside the shared catalog.

A dataset is uploaded as one ``.npz`` (``train_images`` / ``train_labels``, optionally
``val_*`` and ``test_*``: plain arrays, never pickles) and kept under the workspace; the jobs
and tuning searches of that workspace find it by name before the catalog. Another
workspace's dataset answers 404, like one that does not exist. An upload streams to disk
and is bounded by ``MAX_UPLOAD`` (413 past it), not by the control API's 16 MiB body limit,
and what it unpacks to by ``MAX_UNPACKED``. The bytes of the files it is stored as are metered
as ``storage_bytes`` and count against a hard-capped plan's storage (429 past it), like model
versions, until the dataset is deleted or replaced (decision 0019).
"""

from __future__ import annotations

import tempfile
import uuid
import zipfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from kaon.errors import ConfigError, DataError
from kaon.platform import billing, metering, quota
from kaon.platform.api.deps import DB, Reader, Trainer
from kaon.platform.audit import audit
from kaon.platform.auth import Principal
from kaon.platform.common import lock_workspace
from kaon.platform.errors import PayloadTooLarge

router = APIRouter()
MAX_UPLOAD = 512 * 1024**2  # bytes of one upload's body, streamed to disk
MAX_UNPACKED = 512 * 1024**2  # bytes one upload may inflate to
UPLOAD_PREFIX = "/api/v1/datasets/"  # PUT here is exempt from the control API's 16 MiB limit
DatasetName = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$",
                                  description="The dataset's name in this workspace.")]
NPZ_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary",
               "description": "a MedMNIST-layout .npz: train_images, train_labels, "
                              "optionally val_* and test_*"}}}}}


@router.get("/datasets", summary="Datasets this workspace can train on: its own uploads, then "
                                 "the shared catalog")
def list_datasets(principal: Reader) -> list[dict[str, Any]]:
    from kaon.data import list_datasets as rows

    return [_public(r) for r in rows(principal.workspace_id)]


@router.get("/datasets/{name}", summary="One dataset: classes, splits and image shape")
def get_dataset(name: DatasetName, principal: Reader) -> dict[str, Any]:
    from kaon.data import describe_dataset

    return _public(describe_dataset(name, principal.workspace_id))


@router.put("/datasets/{name}", status_code=201, openapi_extra=NPZ_BODY,
            responses={413: {"description": f"over {MAX_UPLOAD:,} bytes"}},
            summary="Upload a dataset (.npz bytes as the body, streamed) under NAME")
async def upload_dataset(name: DatasetName, request: Request, db: DB, principal: Trainer,
                         overwrite: Annotated[bool, Query()] = False) -> dict[str, Any]:
    from kaon.config import get_settings

    db.commit()  # the key check may have written (last used): no lock held while bytes arrive
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD:
        raise PayloadTooLarge(f"The upload ({int(declared):,} bytes) is over {MAX_UPLOAD:,} "
                              "bytes.", hint="Split the data into several datasets.")
    scratch = get_settings().home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        upload = FilePath(folder) / "upload.npz"
        size = 0
        with upload.open("wb") as out:  # to disk as it arrives: never the whole body in memory
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise PayloadTooLarge(
                        f"The upload is over {MAX_UPLOAD:,} bytes.",
                        hint="Split the data into several datasets.")
                out.write(chunk)
        if not size:
            raise ConfigError("The body is empty: send the .npz file's bytes.",
                              hint=f"kaon datasets upload FILE.npz --name {name}")
        return await run_in_threadpool(_store, db, principal, name, upload, size, overwrite)


@router.delete("/datasets/{name}", status_code=204, summary="Delete one of this workspace's "
                                                            "datasets")
def delete_dataset(name: DatasetName, db: DB, principal: Trainer) -> None:
    from kaon.data import delete_dataset as remove

    lock_workspace(db, principal.workspace_id)  # for _free
    remove(name, principal.workspace_id)
    _free(db, principal.workspace_id, name)
    audit(db, principal, "dataset.delete", name)


def _free(db: Session, workspace: str, name: str) -> None:
    """Give back the stored bytes metered for dataset ``name`` (deleted or replaced). The
    caller holds the workspace's lock: two requests reading what the dataset holds before
    either gives it back would both give it back."""
    held = metering.stored_by(db, workspace, "dataset", name)
    if held:
        metering.record(db, workspace, "storage_bytes", -held,
                        f"dataset-freed:{uuid.uuid4().hex}", {"dataset": name})


def _store(db: Session, principal: Principal, name: str, upload: FilePath, size: int,
           overwrite: bool) -> dict[str, Any]:
    from kaon.data import describe_dataset, import_dataset

    workspace = principal.workspace_id
    unpacked = _unpacked_bytes(upload)
    if unpacked > MAX_UNPACKED:  # the body is bounded; what it inflates to must be too
        raise DataError(f"The upload unpacks to {unpacked:,} bytes, over the "
                        f"{MAX_UNPACKED:,}-byte limit of one upload.",
                        hint="Split the data into several datasets.")

    def admit(stored: int) -> None:
        """The bytes written (labels widened to int64, so up to several times the upload's
        arrays) are usage, in this request's transaction (undone if the import fails), before
        they take the name: a hard-capped plan refuses what would pass its storage (429).
        Under the workspace's lock, what a dataset this upload replaces held is given back
        first."""
        lock_workspace(db, workspace)
        if overwrite:
            _free(db, workspace, name)
        quota.check_and_consume(db, workspace, "storage_bytes", stored,
                                billing.current_plan(db, workspace),
                                event_key=f"dataset:{uuid.uuid4().hex}",
                                source={"dataset": name})

    try:
        dataset = import_dataset(upload, name, format="npz", workspace=workspace,
                                 overwrite=overwrite, source="upload",
                                 admit=admit)  # 409 when taken
    except DataError as exc:  # the reader names its file: not a path for the caller
        raise DataError(exc.message.replace(str(upload), "the upload"),
                        hint=exc.hint) from None
    audit(db, principal, "dataset.upload", name,  # committed with the request
          {"bytes": size, "images": sum(len(s) for s in dataset.splits.values()),
           "overwrite": overwrite})
    return _public(describe_dataset(name, workspace))


def _unpacked_bytes(path: FilePath) -> int:
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return 0  # not a zip at all: the reader says so, in its words


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A listing row without server paths (not the caller's business)."""
    out = {k: v for k, v in row.items() if k != "location"}
    if out["kind"] == "imported":  # not "imported from /srv/…" nor an error naming a path
        out["description"] = ("a dataset of this workspace" if out["status"] == "available"
                              else "unreadable: re-upload it with ?overwrite=true")
    return out
