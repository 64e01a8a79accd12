"""The Open Inference Protocol (KServe V2) over REST, so KServe/Triton HTTP clients work.

Health, model metadata and ``POST /v2/models/{name}/infer`` with typed tensors as JSON
``data`` (flat or nested, row-major) or through the binary-tensor extension
(``Inference-Header-Content-Length``). The model takes one input ``input`` of shape
``[-1, C, H, W]`` (``[-1, H, W]`` for one channel) in any numeric datatype with values 0–255,
and returns ``probabilities`` (FP32 ``[-1, K]``) and ``label`` (BYTES ``[-1]``).
Errors use the protocol's own format: ``{"error": "..."}``; a malformed tensor's names what
the model takes. JSON ``data`` must be of its declared datatype (integers for the integer
types, numbers for the float types, booleans for BOOL), and the binary data must end where the
inputs' ``binary_data_size`` say. Each output goes back as JSON data or binary data as its own
``binary_data`` parameter (else the request's ``binary_data_output``) asks; a binary BYTES
output is length-prefixed, as Triton writes it. A body sent with ``Content-Encoding: gzip``
or ``deflate`` (as Triton's clients do on request) is inflated, up to the server's body limit.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from kaon import __version__
from kaon.errors import KaonError, SignatureError
from kaon.registry.signature import Signature
from kaon.serve.asgi import replay
from kaon.serve.runtime import Runtime

DTYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
HEADER_LENGTH = "inference-header-content-length"
_DIGITS = re.compile(r"[0-9]{1,15}")  # str.isdigit() also takes '²', which int() refuses


class V2Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _metadata(runtime: Runtime, name: str) -> dict[str, Any]:
    p = runtime.predictor(name)
    c, h, w = p.signature.shape
    return {
        "name": p.name, "versions": [str(p.version)], "platform": "pytorch",
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": [-1, c, h, w]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32",
                     "shape": [-1, len(p.signature.class_names)]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}],
    }


MAX_INFLATION = 100  # inflated ÷ sent; JSON pixels gzip 3-10x, blank images more
FREE_INFLATION = 1 << 20  # bytes any compressed body may inflate to, whatever its ratio


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before its ``Content-Encoding`` (gzip, or deflate: zlib's format or
    raw). Refused past ``limit`` bytes inflated, and past ``MAX_INFLATION`` times what was
    sent (above ``FREE_INFLATION``): a small bomb can neither fill the memory nor make the
    replica parse megabytes of JSON for a few kilobytes sent."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in ("gzip", "deflate"):
        raise V2Error(415, f"Content-Encoding {coding!r:.40} is not supported; send the body "
                           "as is, or gzip or deflate it")
    bound = min(limit, max(FREE_INFLATION, MAX_INFLATION * len(body)))
    for wbits in ((16 + zlib.MAX_WBITS,) if coding == "gzip" else (zlib.MAX_WBITS,
                                                                   -zlib.MAX_WBITS)):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, bound + 1)
        except zlib.error as exc:
            error = exc
            continue
        if len(out) > bound or inflater.unconsumed_tail:
            raise V2Error(413, f"the {coding} body inflates past {bound:,} bytes (this "
                               f"server's limit, or {MAX_INFLATION} times the bytes sent); "
                               "send fewer images per request, or send them uncompressed")
        if not inflater.eof:
            raise V2Error(400, f"the {coding} body is cut short")
        if inflater.unused_data:
            raise V2Error(400, f"{len(inflater.unused_data)} bytes follow the {coding} "
                               "stream; send one compressed body")
        return out
    raise V2Error(400, f"the body is not {coding} data: {error}")


def takes(sig: Signature) -> str:
    """What the model's one input must be, for error messages."""
    c, h, w = sig.shape
    shapes = f"[N, {c}, {h}, {w}]" + (f" or [N, {h}, {w}]" if c == 1 else "")
    return (f"this model takes one input 'input' of shape {shapes} ({sig.describe()}), any "
            "numeric datatype, with pixel values 0..255")


def parse_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    """Split a (possibly binary-extension) body into the JSON header and the tensor bytes."""
    if header_length is None:
        header_length = len(body)
    if header_length < 0 or header_length > len(body):
        raise V2Error(400, f"Inference-Header-Content-Length {header_length} is outside the "
                           f"{len(body)}-byte body")
    try:
        header = json.loads(body[:header_length])
    except (UnicodeDecodeError, ValueError) as exc:
        raise V2Error(400, f"the request header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or \
            not header["inputs"]:
        raise V2Error(400, "the request needs a non-empty 'inputs' list")
    return header, body[header_length:]


def parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """``obj``'s ``parameters`` object ({} when absent)."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise V2Error(400, f"{where}: 'parameters' must be an object, got {params!r:.40}")
    return params


def decode_tensor(spec: dict[str, Any], binary: bytes, offset: int,
                  sig: Signature) -> tuple[np.ndarray, int]:
    """One V2 input tensor → uint8 (N, C, H, W), checked against the signature."""
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if name != "input":
        raise V2Error(400, f"input {name!r:.40} is not this model's input: it takes one "
                           f"tensor named 'input'")
    if datatype not in DTYPES:
        raise V2Error(400, f"input {name!r}: datatype {datatype!r:.40} is not one of "
                           f"{', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise V2Error(400, f"input {name!r}: 'shape' must be a list of non-negative integers")
    c, h, w = sig.shape
    dims = tuple(shape)
    if len(dims) == 3 and c == 1:
        dims = (dims[0], 1, *dims[1:])
    if len(dims) != 4 or dims[1:] != (c, h, w):
        expected = f"[N, {c}, {h}, {w}]" + (f" or [N, {h}, {w}]" if c == 1 else "")
        raise V2Error(400, f"input {name!r}: shape {shape} does not match the signature "
                           f"{expected} ({sig.describe()})")
    count = math.prod(dims)  # Python integers: no wrap-around for absurd shapes
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    size = parameters(spec, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != count * dtype.itemsize or \
                offset + size > len(binary):
            raise V2Error(400, f"input {name!r}: binary_data_size {size} does not match shape "
                               f"{shape} of {datatype} or the bytes sent")
        array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        offset += size
    else:
        array = _json_data(spec.get("data"), datatype, dtype, name, count)
        if array.size != count:
            raise V2Error(400, f"input {name!r}: {array.size} values for shape {shape}")
    values = array.reshape(dims)
    if values.dtype == np.uint8:  # already pixels: nothing to check or convert
        return np.ascontiguousarray(values), offset
    if values.size and ((values.dtype.kind == "f" and not np.isfinite(values).all())
                        or values.min() < 0 or values.max() > 255):
        raise V2Error(400, f"input {name!r}: values must be pixel values in 0..255")
    if values.dtype.kind == "f":
        values = np.rint(values)
    return np.ascontiguousarray(values.astype(np.uint8)), offset


# the kinds of numbers (numpy's dtype.kind) JSON data may hold for each kind of datatype
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_KIND_WORDS = {"b": "booleans", "u": "integers", "i": "integers", "f": "numbers"}
_FOUND_WORDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats",
                "U": "strings", "S": "strings", "O": "mixed values"}


def _json_data(data: Any, datatype: str, dtype: np.dtype[Any], name: Any,
               count: int) -> np.ndarray:
    """JSON ``data`` as a flat array of ``dtype``, refused unless every value is of the
    datatype's kind and range: 1.9 is not a UINT8 (it was truncated to 1), nor "1", nor true,
    nor 300."""
    if isinstance(data, list) and data and not isinstance(data[0], list) \
            and len(data) != count:  # a flat list's length is free: no conversion to refuse
        raise V2Error(400, f"input {name!r}: {len(data)} values for {count} in its shape")
    try:
        found = np.asarray(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise V2Error(400, f"input {name!r}: 'data' is not {datatype}: {exc}") from None
    if not found.size:
        return np.empty(0, dtype)
    kind = found.dtype.kind
    if kind in "iuf" and _holds_bool(data):  # numpy made [true, 1] integers: look again
        kind = "b"
    if kind not in _JSON_KINDS[dtype.kind]:
        raise V2Error(400, f"input {name!r}: 'data' of a {datatype} tensor must hold "
                           f"{_KIND_WORDS[dtype.kind]}, got "
                           f"{_FOUND_WORDS.get(kind, 'other values')}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if found.min() < info.min or found.max() > info.max:
            raise V2Error(400, f"input {name!r}: 'data' holds values outside {datatype}'s "
                               f"range {info.min}..{info.max}")
    return found.astype(dtype).reshape(-1)


def _holds_bool(data: Any) -> bool:
    """Whether (nested lists of) JSON values hold a boolean among numbers (~10 µs for 784)."""
    if isinstance(data, list) and data and isinstance(data[0], list):
        return any(_holds_bool(row) for row in data)
    return isinstance(data, list) and bool in set(map(type, data))


OUTPUTS = ("probabilities", "label")


def requested_outputs(header: dict[str, Any]) -> list[tuple[str, bool]]:
    """The outputs the request names (all when it names none), each with whether it goes
    back as binary data: its own ``binary_data`` parameter, else the request's
    ``binary_data_output`` (as Triton reads them)."""
    wanted = header.get("outputs") or []
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise V2Error(400, "'outputs' must be a list of objects with a 'name'")
    default = bool(parameters(header, "the request").get("binary_data_output"))
    flags: dict[str, bool] = {}
    for o in wanted:
        name = o.get("name")
        if name not in OUTPUTS:
            raise V2Error(400, f"unknown output {name!r:.40}; this model returns "
                               f"{', '.join(OUTPUTS)}")
        flags[name] = bool(parameters(o, f"output {name!r}").get("binary_data", default))
    if not wanted:
        flags = dict.fromkeys(OUTPUTS, default)
    return [(n, flags[n]) for n in OUTPUTS if n in flags]


def _bytes_tensor(values: list[str]) -> bytes:
    """BYTES elements in the binary extension's layout: each one a 4-byte little-endian
    length, then its bytes."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in (v.encode() for v in values))


def encode_response(p: Any, results: list[dict[str, Any]], request_id: Any,
                    outputs_wanted: list[tuple[str, bool]]) -> Response:
    proba = np.asarray([r["probabilities"] for r in results], dtype=np.float32)
    labels = [str(r["label"]) for r in results]
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in outputs_wanted:
        floats = name == "probabilities"
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32" if floats else "BYTES",
                                  "shape": list(proba.shape) if floats else [len(labels)]}
        if binary:
            raw = proba.astype("<f4").tobytes() if floats else _bytes_tensor(labels)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = proba.reshape(-1).tolist() if floats else labels
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": p.name, "model_version": str(p.version),
                            "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    if not chunks:
        return JSONResponse(body)
    header = json.dumps(body).encode()
    return Response(b"".join([header, *chunks]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _served(runtime: Runtime, name: str, version: str | None) -> Any:
    """The predictor serving ``name`` (and ``version``, when one is asked for)."""
    p = runtime.predictor(name)
    if version is not None and version != str(p.version):
        raise V2Error(404, f"model {name!r} has no version {version!r} here; served: "
                           f"{p.version}")
    return p


def _failure(exc: V2Error | KaonError) -> tuple[int, str]:
    """The status and message of a refusal."""
    return (exc.status, exc.message) if isinstance(exc, V2Error) else (exc.http_status,
                                                                        exc.message)


def _inputs(header: dict[str, Any], binary: bytes, sig: Signature) -> np.ndarray:
    """The request's one input as uint8 (N, C, H, W); a malformed tensor's error says what
    the model takes."""
    try:
        offset, arrays = 0, []
        for spec in header["inputs"]:
            if not isinstance(spec, dict):
                raise V2Error(400, "each input must be an object")
            array, offset = decode_tensor(spec, binary, offset, sig)
            arrays.append(array)
        if len(arrays) != 1:
            raise V2Error(400, f"the model takes one input tensor, got {len(arrays)}")
        if offset != len(binary):
            raise V2Error(400, f"{len(binary) - offset} bytes follow the inputs' binary data "
                               "(binary_data_size says where each tensor ends)")
    except V2Error as exc:
        if "signature" not in exc.message:
            exc.message = f"{exc.message}; {takes(sig)}"
        raise
    if not len(arrays[0]):
        raise V2Error(400, "input 'input' holds no images (its first dimension is 0)")
    return arrays[0]


def router(runtime: Runtime, max_body: int) -> APIRouter:
    """The V2 routes. A refusal from the runtime during inference (a full queue, a timeout, a
    failed prediction) propagates to the server's KaonError handler, which answers in V2's
    format and counts rejections like every other route. (``POST /v2/models/{name}/infer``
    reaches the route only where :class:`FastInfer` is not installed; FastInfer maps the
    refusal with the same function.)"""
    api = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

    @api.get("", summary="V2 server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "kaon", "version": __version__,
                "extensions": ["binary_tensor_data"]}

    @api.get("/health/live", summary="V2 liveness")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/health/ready", summary="V2 readiness")
    async def ready() -> JSONResponse:
        return JSONResponse(status_code=200 if runtime.ready else 503,
                            content={"ready": runtime.ready})

    @api.get("/models/{name}", summary="V2 model metadata")
    @api.get("/models/{name}/versions/{version}", summary="V2 model metadata (one version)")
    async def metadata(name: str, version: str | None = None) -> JSONResponse:
        try:
            _served(runtime, name, version)
            return JSONResponse(_metadata(runtime, name))
        except (V2Error, KaonError) as exc:
            return error_response(*_failure(exc))

    @api.get("/models/{name}/ready", summary="V2 model readiness")
    @api.get("/models/{name}/versions/{version}/ready",
             summary="V2 model readiness (one version)")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        try:
            _served(runtime, name, version)
            return JSONResponse({"name": name, "ready": True})
        except (V2Error, KaonError) as exc:
            status, message = _failure(exc)
            return JSONResponse(status_code=status,
                                content={"name": name, "ready": False, "error": message})

    @api.post("/models/{name}/infer", summary="V2 inference (JSON or binary tensors)")
    @api.post("/models/{name}/versions/{version}/infer",
              summary="V2 inference on one version (JSON or binary tensors)")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        return await infer_response(runtime, max_body, name, version, request.headers,
                                    await request.body())

    return api


async def infer_response(runtime: Runtime, max_body: int, name: str, version: str | None,
                         headers: Mapping[str, str], body: bytes) -> Response:
    """``POST /v2/models/{name}[/versions/{version}]/infer``, for the route and for
    :class:`FastInfer`. A malformed request gets V2's error here; a refusal from the runtime
    (an unknown model, a full queue, a timeout, a failed prediction) raises its KaonError."""
    try:
        p = _served(runtime, name, version)
        raw_length = headers.get(HEADER_LENGTH)
        if raw_length is not None and not _DIGITS.fullmatch(raw_length):
            raise V2Error(400, f"Inference-Header-Content-Length {raw_length!r} is not a "
                               "number")
        body = inflate(body, headers.get("content-encoding"), max_body)
        header, binary = parse_request(body, int(raw_length) if raw_length else None)
        if not isinstance(header.get("id", ""), str):
            raise V2Error(400, f"'id' must be a string, got {header['id']!r:.40}")
        images = _inputs(header, binary, p.signature)
        wanted = requested_outputs(header)
        results = await runtime.predict(images)
        return encode_response(p, results, header.get("id"), wanted)
    except V2Error as exc:
        return error_response(exc.status, exc.message)
    except SignatureError as exc:
        return error_response(400, exc.message)
    except RecursionError:  # the app's handler for it is not on FastInfer's path
        return error_response(400, "the request nests arrays too deeply; send each input's "
                                   "data flat, or shaped as the input")


class FastInfer:
    """``POST /v2/models/{name}/infer`` as plain ASGI, the same answer as the route's without
    FastAPI's routing and dependency solving, which cost as much of the event loop as the
    rest of a many-image request (decision 0029). Other paths, and a body that did not come
    in one message, go on to the app."""

    ROUTE = SimpleNamespace(path="/v2/models/{name}/infer")  # the metrics' route label

    def __init__(self, app: ASGIApp, runtime: Runtime, max_body: int,
                 errors: Callable[[KaonError], Response]) -> None:
        self.app, self.runtime, self.max_body, self.errors = app, runtime, max_body, errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        name = path[len("/v2/models/"):-len("/infer")]
        if scope.get("method") != "POST" or not path.startswith("/v2/models/") \
                or not path.endswith("/infer") or not name or "/" in name:
            await self.app(scope, receive, send)
            return
        message = await receive()  # the body limit has read the whole body already
        if message["type"] != "http.request" or message.get("more_body"):
            await self.app(scope, replay([message], receive), send)
            return
        scope["route"] = self.ROUTE
        try:
            response = await infer_response(self.runtime, self.max_body, name, None,
                                            Headers(scope=scope), message.get("body", b""))
        except KaonError as exc:
            response = self.errors(exc)
        await response(scope, receive, send)
