"""Routes: the workspace's own datasets, beside the shared catalog.

A dataset is uploaded as one ``.npz`` (``train_images`` / ``train_labels``, optionally
``val_*`` and ``test_*``: plain arrays, never pickles) and kept under the workspace; the jobs
and tuning searches of that workspace find it by name before the catalog. Another
workspace's dataset answers 404, like one that does not exist. Uploads are bounded by the
control API's body limit (413 past it).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from kaon.errors import ConfigError, DataError
from kaon.platform.api.deps import DB, Reader, Trainer
from kaon.platform.audit import audit
from kaon.platform.auth import Principal

router = APIRouter()
MAX_UNPACKED = 512 * 1024**2  # bytes one upload may inflate to (the body limit is 16 MiB)
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
            summary="Upload a dataset (.npz bytes as the body) under NAME")
async def upload_dataset(name: DatasetName, request: Request, db: DB, principal: Trainer,
                         overwrite: Annotated[bool, Query()] = False) -> dict[str, Any]:
    body = await request.body()  # the body limit middleware has bounded it already
    if not body:
        raise ConfigError("The body is empty: send the .npz file's bytes.",
                          hint=f"kaon datasets upload FILE.npz --name {name}")
    return await run_in_threadpool(_store, db, principal, name, body, overwrite)


@router.delete("/datasets/{name}", status_code=204, summary="Delete one of this workspace's "
                                                            "datasets")
def delete_dataset(name: DatasetName, db: DB, principal: Trainer) -> None:
    from kaon.data import delete_dataset as remove

    remove(name, principal.workspace_id)
    audit(db, principal, "dataset.delete", name)


def _store(db: Session, principal: Principal, name: str, body: bytes,
           overwrite: bool) -> dict[str, Any]:
    from kaon.config import get_settings
    from kaon.data import describe_dataset, import_dataset

    workspace = principal.workspace_id
    scratch = get_settings().home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        upload = FilePath(folder) / "upload.npz"
        upload.write_bytes(body)
        unpacked = _unpacked_bytes(upload)
        if unpacked > MAX_UNPACKED:  # the body is bounded; what it inflates to must be too
            raise DataError(f"The upload unpacks to {unpacked:,} bytes, over the "
                            f"{MAX_UNPACKED:,}-byte limit of one upload.",
                            hint="Split the data into several datasets.")
        try:
            dataset = import_dataset(upload, name, format="npz", workspace=workspace,
                                     overwrite=overwrite, source="upload")  # 409 when taken
        except DataError as exc:  # the reader names its file: not a path for the caller
            raise DataError(exc.message.replace(str(upload), "the upload"),
                            hint=exc.hint) from None
    audit(db, principal, "dataset.upload", name,  # committed with the request
          {"bytes": len(body), "images": sum(len(s) for s in dataset.splits.values()),
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
