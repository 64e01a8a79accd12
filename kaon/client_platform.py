"""The platform half of :class:`kaon.Client`: the control API (``/api/v1``) and the gateway.

    >>> from kaon import Client
    >>> with Client("http://127.0.0.1:8080", api_key="kaon_…") as c:
    ...     c.me()["workspace"]["name"]
    ...     c.deploy("mnist-mlp:2", name="digits")
    ...     c.wait_deployment_ready("digits")
    ...     c.infer("digits", images)           # Kaon JSON predict through /d/digits/…

Methods return the API's JSON (dicts and lists, as documented at ``/docs``). Error
responses are rebuilt into the :class:`~kaon.errors.KaonError` subclass the server raised
(``NotFoundError``, ``AuthError``, ``ForbiddenError``, ``ConflictError``,
``PlanLimitError``, ``QuotaExceeded``, ``RateLimited``, ``ConfigError``, …), with its hint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from kaon import errors as _core_errors
from kaon.errors import ConfigError, KaonError, NotFoundError, UnavailableError
from kaon.platform import errors as _platform_errors
from kaon.platform.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    QuotaExceeded,
    RateLimited,
)

if TYPE_CHECKING:
    from kaon.client import Prediction

API = "/api/v1"
FINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_BY_STATUS: dict[int, type[KaonError]] = {
    401: AuthError, 403: ForbiddenError, 404: NotFoundError, 409: ConflictError,
    422: ConfigError, 429: RateLimited, 502: UnavailableError, 503: UnavailableError,
    504: UnavailableError}
_ALIASES: dict[str, type[KaonError]] = {"ValidationError": ConfigError}


def _known_errors() -> dict[str, type[KaonError]]:
    found: dict[str, type[KaonError]] = {}
    for module in (_core_errors, _platform_errors):
        for name in dir(module):
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, KaonError):
                found[name] = cls
    return {**found, **_ALIASES}


_KNOWN = _known_errors()


def error_from_response(response: httpx.Response) -> KaonError:
    """The :class:`KaonError` an error response stands for: the class the body names (else
    one chosen by status), its message and hint, and ``retry_after``/quota fields for 429s;
    ``.status`` and ``.body`` keep the HTTP status and the decoded body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if not isinstance(body, dict):  # a proxy's page, or another server altogether
        body = {"message": f"HTTP {status} {response.reason_phrase}{_from(response)}, "
                           f"with a {_kind(response)} body, not a Kaon error.",
                "hint": _CHECK_URL}
    message = str(body.get("message") or body.get("detail") or f"HTTP {status}")
    hint = body.get("hint")
    cls = _KNOWN.get(str(body.get("error")), _BY_STATUS.get(status, KaonError))
    if cls is RateLimited or (cls is KaonError and status == 429):
        cls = QuotaExceeded if "reset_at" in body else RateLimited
    exc = cls.__new__(cls)
    KaonError.__init__(exc, message, hint=str(hint) if hint else None)
    if isinstance(exc, RateLimited):
        retry = body.get("retry_after", response.headers.get("retry-after", 1))
        try:
            exc.retry_after = int(float(retry))
        except (TypeError, ValueError):
            exc.retry_after = 1
    elif isinstance(exc, QuotaExceeded):
        exc.plan, exc.metric = body.get("plan"), body.get("metric")
        exc.limit, exc.used = body.get("limit"), body.get("used")
        exc.reset_at = body.get("reset_at") or response.headers.get("x-quota-reset")
    exc.status = status  # type: ignore[attr-defined]
    exc.body = body  # type: ignore[attr-defined]
    return exc


_CHECK_URL = ("Check the URL: the server's root as `kaon up` or `kaon serve` printed it "
              "(e.g. http://127.0.0.1:8080, without /api/v1).")


def _kind(response: httpx.Response) -> str:
    return response.headers.get("content-type", "no content type").split(";")[0]


def _from(response: httpx.Response) -> str:
    try:
        return f" from {response.request.method} {response.url}"
    except RuntimeError:  # a response built by hand has no request
        return ""


def json_body(response: httpx.Response) -> Any:
    """The JSON of a successful answer; UnavailableError when it is not JSON (the URL
    reaches some other server, e.g. a web page that answers 200 to everything)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            return response.json()
        except ValueError:
            pass
    raise UnavailableError(f"The answer{_from(response)} ({response.status_code}, "
                           f"{_kind(response)}) is not Kaon's JSON: this URL is not a Kaon "
                           "server.", hint=_CHECK_URL)


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` → (name, None); ``"name:3"`` → (name, 3). Aliases are not resolved here."""
    name, sep, version = ref.partition(":")
    if "@" in ref:
        raise ConfigError(f"{ref!r}: the platform deploys NAME or NAME:VERSION, not an alias.",
                          hint="Look the version up with `kaon models show NAME@ALIAS`.")
    if not name or (sep and not version.isdigit()):
        raise ConfigError(f"{ref!r} is not a model reference.",
                          hint="Write NAME (the latest version) or NAME:VERSION, e.g. digits:2.")
    return name, int(version) if sep else None


def load_job_spec(spec: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A spec given as a mapping, or the path of a YAML/JSON file holding one."""
    if isinstance(spec, dict):
        return spec
    from kaon.specfile import read_spec_file

    return read_spec_file(spec)



def segment(value: object) -> str:
    """An id or name as one URL path segment: percent-encoded, so a value holding '/' or '?'
    (a name from an untrusted source) cannot reach another route; '.' and '..' are refused,
    as a client would resolve them."""
    text = str(value)
    if text in ("", ".", ".."):
        raise ConfigError(f"{text!r} is not an id or a name.",
                          hint="Pass the id or name that `list` shows.")
    return quote(text, safe="@:")

class PlatformMixin:
    """Methods for ``kaon up``'s control API; mixed into :class:`kaon.Client`."""

    _http: httpx.Client

    @property
    def url(self) -> str:
        """The server's base URL."""
        return str(self._http.base_url).rstrip("/")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One control-API request (``path`` under /api/v1); errors raise their KaonError."""
        return self._request(method, API + path, **kwargs)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a transport failure or an error response raises its KaonError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise UnavailableError(f"The server at {self._http.base_url} did not answer "
                                   f"{method} {path} in time.",
                                   hint="Retry; if it is busy, pass a longer timeout= to "
                                        "kaon.Client.") from None
        except httpx.TransportError as exc:
            raise UnavailableError(f"Cannot reach the server at {self._http.base_url}: "
                                   f"{exc or type(exc).__name__}.",
                                   hint="Is `kaon up` (or `kaon serve`) running there? Check "
                                        "the URL.") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _request(self, method: str, path: str, *, text: bool = False, **kwargs: Any) -> Any:
        """:meth:`_send`, then the body: JSON (``text``: the text), or None for an empty
        answer. A JSON route that answers anything else is not Kaon: UnavailableError."""
        response = self._send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        if text:
            return response.text
        return json_body(response)

    # ---- the caller, workspaces, members, keys, audit -----------------------------------
    def me(self) -> dict[str, Any]:
        """Who the key belongs to: user, role, scopes and workspace."""
        return self._call("GET", "/me")

    def workspace(self) -> dict[str, Any]:
        return self._call("GET", "/workspace")

    def workspaces(self) -> list[dict[str, Any]]:
        return self._call("GET", "/workspaces")

    def create_workspace(self, name: str, plan: str | None = None) -> dict[str, Any]:
        """A new workspace owned by the caller: ``{"workspace", "key"}`` (its admin key)."""
        return self._call("POST", "/workspaces", json={"name": name, "plan": plan})

    def members(self) -> list[dict[str, Any]]:
        return self._call("GET", "/members")

    def add_member(self, email: str, role: str = "member",
                   name: str | None = None) -> dict[str, Any]:
        """``{"member", "key"}``: the new member's first key (its secret shown this once)."""
        return self._call("POST", "/members", json={"email": email, "role": role, "name": name})

    def set_role(self, user_id: str, role: str) -> dict[str, Any]:
        return self._call("PATCH", f"/members/{segment(user_id)}", json={"role": role})

    def remove_member(self, user_id: str) -> None:
        self._call("DELETE", f"/members/{segment(user_id)}")

    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/keys")

    def create_key(self, name: str, scopes: list[str]) -> dict[str, Any]:
        """A new key for the caller; ``secret`` is in this answer only."""
        return self._call("POST", "/keys", json={"name": name, "scopes": list(scopes)})

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/keys/{segment(key_id)}")

    def audit(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        return self._call("GET", "/audit", params=params)

    # ---- plans, subscription, usage, invoices --------------------------------------------
    def plans(self) -> dict[str, Any]:
        """``{"version", "default_plan", "plans": [...]}``."""
        return self._call("GET", "/plans")

    def subscription(self) -> dict[str, Any]:
        return self._call("GET", "/subscription")

    def subscribe(self, plan: str) -> dict[str, Any]:
        """Subscribe or change plan (prorated); undoes a pending cancellation."""
        return self._call("POST", "/subscription", json={"plan": plan})

    def cancel_subscription(self) -> dict[str, Any]:
        """Cancel at the end of the current period."""
        return self._call("POST", "/subscription/cancel")

    def usage(self, period: str | None = None) -> dict[str, Any]:
        """Usage for a month ``YYYY-MM`` (default: this one)."""
        return self._call("GET", "/usage", params={"period": period} if period else None)

    def invoices(self) -> list[dict[str, Any]]:
        return self._call("GET", "/invoices")

    def generate_invoice(self, period: str) -> dict[str, Any]:
        """Make (or fetch again) the invoice of a finished month; needs the admin scope."""
        return self._call("POST", f"/invoices/{segment(period)}")

    def invoice(self, period_or_id: str) -> dict[str, Any]:
        """One invoice, by id (``inv-…``) or by month (``YYYY-MM``; 404 if not made yet)."""
        if not _PERIOD.fullmatch(period_or_id):
            return self._call("GET", f"/invoices/{segment(period_or_id)}")
        for invoice in self.invoices():
            if invoice["period"] == period_or_id:
                return invoice
        raise NotFoundError(f"No invoice for {period_or_id} yet.",
                            hint=f"Make it with `kaon invoices {period_or_id}` "
                                 "(generate_invoice) once the month is over.")

    def invoice_html(self, period_or_id: str) -> str:
        """The printable HTML page of an invoice (by id or month)."""
        invoice_id = (self.invoice(period_or_id)["id"] if _PERIOD.fullmatch(period_or_id)
                      else period_or_id)
        return self._call("GET", f"/invoices/{segment(invoice_id)}.html", text=True)

    # ---- jobs -----------------------------------------------------------------------------
    def submit_job(self, spec: dict[str, Any] | str | Path, kind: str = "train",
                   max_attempts: int = 3) -> dict[str, Any]:
        """Queue a job; ``spec`` is a mapping or the path of a YAML file."""
        return self._call("POST", "/jobs", json={"kind": kind, "spec": load_job_spec(spec),
                                                 "max_attempts": max_attempts})

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._call("GET", "/jobs", params=params)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{segment(job_id)}")

    def job_logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        """The job's log from byte ``offset``: ``{"text", "offset", "state"}``, where
        ``offset`` is where the next call goes on from and ``state`` the job's state."""
        response = self._send("GET", f"{API}/jobs/{segment(job_id)}/logs",
                              params={"offset": offset})
        return {"text": response.text,
                "offset": int(response.headers.get("x-log-offset", offset)),
                "state": response.headers.get("x-job-state", "")}

    def follow_job_logs(self, job_id: str, offset: int = 0,
                        poll_s: float = 1.0) -> Iterator[str]:
        """Yield the log as it grows, until the job has ended and all of it was read."""
        while True:
            chunk = self.job_logs(job_id, offset)
            if chunk["text"]:
                yield chunk["text"]
            if chunk["offset"] == offset and chunk["state"] in FINAL_JOB_STATES:
                return
            if chunk["offset"] == offset:
                time.sleep(poll_s)
            offset = chunk["offset"]

    def tune(self, dataset: str, time_seconds: float, **options: Any) -> dict[str, Any]:
        """Queue a ``kaon tune`` search as a job (the plan needs the automl feature); options
        as in :class:`kaon.tune.study.TuneConfig`: objective, trial_seconds, model_name, …"""
        return self._call("POST", "/tune", json={"dataset": dataset,
                                                 "time_seconds": time_seconds, **options})

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job now, or ask a running one to stop."""
        return self._call("POST", f"/jobs/{segment(job_id)}/cancel")

    def wait_job(self, job_id: str, timeout: float | None = None,
                 poll_s: float = 2.0) -> dict[str, Any]:
        """Poll until the job succeeded, failed or was cancelled; returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in FINAL_JOB_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise UnavailableError(f"Job {job_id} is still {job['state']} after "
                                       f"{timeout:.0f}s.", hint="Is a job worker running?")
            time.sleep(poll_s)

    # ---- datasets -------------------------------------------------------------------------
    def datasets(self) -> list[dict[str, Any]]:
        """The workspace's own datasets, then the shared catalog."""
        return self._call("GET", "/datasets")

    def dataset(self, name: str) -> dict[str, Any]:
        """One dataset: kind, classes, splits and image shape."""
        return self._call("GET", f"/datasets/{segment(name)}")

    def upload_dataset(self, name: str, npz: bytes | str | Path,
                       overwrite: bool = False) -> dict[str, Any]:
        """Upload an ``.npz`` (bytes, or a path to one, streamed from disk) as ``name`` in the
        workspace; for an image folder or CSV, build the bytes with
        :func:`kaon.data.dataset_npz`."""
        with nullcontext(npz) if isinstance(npz, bytes) else Path(npz).open("rb") as body:
            return self._call("PUT", f"/datasets/{segment(name)}", content=body,
                              params={"overwrite": "true"} if overwrite else None,
                              headers={"content-type": "application/octet-stream"})

    def delete_dataset(self, name: str) -> None:
        self._call("DELETE", f"/datasets/{segment(name)}")

    # ---- deployments and inference ---------------------------------------------------------
    def deploy(self, model: str, name: str | None = None, replicas: int = 1,
               max_batch_size: int = 32, max_wait_ms: float = 5.0) -> dict[str, Any]:
        """Deploy ``"name[:version]"`` (latest version by default) as ``name`` (default: the
        model's name)."""
        model_name, version = parse_model_ref(model)
        return self._call("POST", "/deployments", json={
            "name": name or model_name, "model": model_name, "version": version,
            "replicas": replicas, "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms})

    def registered_models(self) -> list[dict[str, Any]]:
        """The workspace's registered model versions (what `deploy` can serve)."""
        return self._call("GET", "/models")

    def registered_model(self, ref: str) -> dict[str, Any]:
        """One version: NAME (latest), NAME:VERSION or NAME@ALIAS. (``model(name)`` is a
        model server's metadata, as for `kaon serve`.)"""
        return self._call("GET", f"/models/{segment(ref)}")

    def deployments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/deployments")

    def deployment(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/deployments/{segment(name)}")

    def scale(self, name: str, replicas: int | None = None, max_batch_size: int | None = None,
              max_wait_ms: float | None = None) -> dict[str, Any]:
        """Change replicas and/or batching (only the values given)."""
        body = {"replicas": replicas, "max_batch_size": max_batch_size,
                "max_wait_ms": max_wait_ms}
        return self._call("PATCH", f"/deployments/{segment(name)}",
                          json={k: v for k, v in body.items() if v is not None})

    def delete_deployment(self, name: str) -> None:
        self._call("DELETE", f"/deployments/{segment(name)}")

    def wait_deployment_ready(self, name: str, timeout: float = 120.0,
                              poll_s: float = 0.5) -> dict[str, Any]:
        """Poll until the deployment is ``ready`` (UnavailableError if it fails or times out)."""
        deadline = time.monotonic() + timeout
        while True:
            dep = self.deployment(name)
            if dep["state"] == "ready":
                return dep
            if dep["state"] == "failed":
                raise UnavailableError(f"Deployment {name} failed to start.",
                                       hint="See the `kaon up` log for the replica's error.")
            if time.monotonic() > deadline:
                raise UnavailableError(f"Deployment {name} is still {dep['state']} after "
                                       f"{timeout:.0f}s.", hint="See the `kaon up` log.")
            time.sleep(poll_s)

    def deployment_model(self, deployment: str) -> str:
        """The model a deployment serves, asked through the gateway (its replica's readiness;
        free, and an ``inference`` key is enough)."""
        body = self._request("GET", f"/d/{segment(deployment)}/readyz")
        if isinstance(body, dict) and body.get("model"):
            return str(body["model"])
        return str(self.deployment(deployment)["model"])

    def infer(self, deployment: str, images: Any, model: str | None = None) -> list[Prediction]:
        """Kaon JSON predict through the gateway (``/d/DEPLOYMENT/v1/models/MODEL/predict``);
        ``model`` defaults to the deployment's (one extra, unmetered request: pass it to
        save that). Needs the ``inference`` scope; each call is one metered request."""
        from kaon.client import Prediction, _encode

        model = model or self.deployment_model(deployment)
        path = f"/d/{segment(deployment)}/v1/models/{segment(model)}/predict"
        body = self._request("POST", path, json={"inputs": _encode(images)})
        return [Prediction(**p) for p in body["predictions"]]
