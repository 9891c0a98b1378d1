"""The UCR HTTP API on Ray Serve: separate, generate and vary audio with a model from the MLflow registry.

Two deployments:

- ``UCRIngress`` (FastAPI): authentication, upload limits, decoding and validation of every request, zip/WAV
  responses. It never touches the model; it turns bad input into a 4xx that says what to change.
- ``UCRModel``: holds one :class:`ucr.pipeline.Pipeline` and delegates every request to it. Separation requests go
  through ``@serve.batch`` (at most ``max_batch_size`` requests per call, one call at a time per replica), so the work
  a replica takes on is bounded, and the windows of a batch's requests share decoder batches. Its ``user_config``
  names the model (``models:/<name>@<alias>`` or a checkpoint URI); ``reconfigure`` loads a new version off the
  request path and swaps it in with one assignment, so requests in flight finish on the model they started with.

Run locally: ``serve run serve.app:app`` (settings from the environment, see :class:`AppArgs`) or
``serve run serve.app:app_builder model=models:/ucr@champion``; on a cluster: ``serve deploy serve/config.yaml``.
Status codes: 400 unusable file content, 401 API key, 409 the model cannot do this (no prior), 413 upload too big or
too long, 415 unsupported file type, 422 bad parameters, 503 overloaded. See serve/README.md.
"""

import asyncio
import dataclasses
import hmac
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Annotated, Any, Literal

import soundfile as sf
from fastapi import File, HTTPException, Query, Request, Security, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

import ucr
from serve.model import Failure, UCRModel
from serve.settings import AppArgs, HTTPSettings, from_mapping
from ucr import audio
from ucr.audio import MIN_SECONDS
from ucr.pipeline import Pipeline


# Bounds of request parameters (the OpenAPI schema states them; the pipeline checks its own too).
MAX_STEPS = 200
MAX_COUNT = 8
MAX_SEED = 2**31 - 1
MAX_COMPONENTS = 64
MAX_GENERATE_SECONDS = Pipeline.MAX_GENERATE_SECONDS  # the prior generates a whole excerpt at once
API_KEY_HEADER = "X-API-Key"
SUPPORTED_EXTENSIONS = {".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}
SUPPORTED_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac",
                   "audio/ogg", "application/ogg", "audio/vorbis"}
GENERIC_TYPES = {"", "application/octet-stream"}  # decided by the file's extension or its bytes


# ------------------------------------------------------------------------------------------------ HTTP: middleware
def _route_path(scope: dict) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


async def _send_json(send, status: int, detail: str, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _runtime(scope: dict):
    """The ingress replica's settings, kept on the state of the FastAPI app that serves the request (the app Serve
    runs in the replica need not be this module's ``api`` object, so read it from the request's scope)."""
    if scope["type"] != "http" or "app" not in scope:
        return None
    return getattr(scope["app"].state, "runtime", None)


PUBLIC_PATHS = {"/healthz", "/"}  # liveness, and the web page's shell (it asks for the key before any API call)
PUBLIC_PREFIXES = ("/ui/", "/static-offline-docs/")  # the page's and the docs' static assets: no model, no data
DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
WEB_FOLDER = Path(__file__).parent / "web"
PAGE_TEMPLATE = (WEB_FOLDER / "index.html").read_text(encoding="utf-8")  # read once; {{ROOT}} is the route prefix
# The pages load nothing from outside the app, and the browser is told so (the docs pages need their inline
# scripts and styles; ReDoc's sidebar would otherwise fetch a logo from its vendor's CDN).
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
               "object-src 'none'; frame-ancestors 'none'")
PAGE_POLICIES = {"/": PAGE_POLICY, "/docs": DOCS_POLICY, "/redoc": DOCS_POLICY}


class APIKeyMiddleware:
    """Every path but /healthz and the web page's static files (and the docs, with ``public_docs``) needs
    ``X-API-Key`` when a key is configured.
    One check for every route, including the docs FastAPI adds; compared in constant time."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan (and websocket, which the app has none of) carry no request
            return await self.app(scope, receive, send)
        runtime = _runtime(scope)
        if runtime is None:  # never skip the check: without its settings the ingress cannot tell who may pass
            return await _send_json(send, 503, "the service is not configured yet; retry shortly")
        if runtime.api_key is None:
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        if (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
                or (runtime.settings.public_docs and path in DOCS_PATHS)):
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope.get("headers", []):
            if name == API_KEY_HEADER.lower().encode():
                given = value
        if not hmac.compare_digest(given, runtime.api_key.encode()):
            problem = "is missing" if not given else "does not match"
            return await _send_json(send, 401, f"the {API_KEY_HEADER} header {problem}; send the service's API key "
                                               f"in {API_KEY_HEADER}", {"WWW-Authenticate": API_KEY_HEADER})
        return await self.app(scope, receive, send)


class PagePolicyMiddleware:
    """The HTML pages (/, /docs, /redoc) carry a Content-Security-Policy that allows only this app's own assets."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        policy = PAGE_POLICIES.get(_route_path(scope)) if scope["type"] == "http" else None
        if policy is None:
            return await self.app(scope, receive, send)

        async def with_policy(event):
            if event["type"] == "http.response.start":
                event = {**event, "headers": [*event.get("headers", []),
                                              (b"content-security-policy", policy.encode()),
                                              (b"x-content-type-options", b"nosniff")]}
            await send(event)

        return await self.app(scope, receive, with_policy)


class UploadLimitMiddleware:
    """413 for request bodies over the limit: at once from Content-Length, or as soon as a streamed body passes it
    (whatever the app was about to answer is dropped), so an oversized upload is never spooled in full. 408 for a
    body that stalls (nothing for ``body_idle_timeout_s``) or trickles (unfinished after ``body_timeout_s``), so that
    slow senders cannot hold the ingress's ongoing-request slots."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        runtime = _runtime(scope)
        if runtime is None:  # fail closed, as APIKeyMiddleware does
            return await _send_json(send, 503, "the service is not configured yet; retry shortly")
        limit = runtime.settings.max_upload_bytes
        message = (f"the upload is larger than this service's limit of {runtime.settings.max_upload_mb:g} MB; "
                   f"send a shorter excerpt or a compressed file (FLAC, Ogg)")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await _send_json(send, 413, message)
        idle, total = runtime.settings.body_idle_timeout_s, runtime.settings.body_timeout_s
        deadline = asyncio.get_running_loop().time() + total
        received = 0
        refused: tuple[int, str] | None = None  # the answer that replaces the app's, once the body is refused
        started = False
        body_done = False

        async def limited_receive():
            nonlocal received, refused, body_done
            if body_done:  # after the body: only the disconnect remains, which may take any time
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                event = await asyncio.wait_for(receive(), timeout=max(0.0, min(idle, left)))
            except asyncio.TimeoutError:
                stalled = left > idle
                refused = (408, f"the upload {'stalled: no data for ' if stalled else 'was not complete after '}"
                                f"{idle if stalled else total:g} s; send the file in one go, or a shorter one")
                raise HTTPException(*refused) from None
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                body_done = not event.get("more_body", False)
                if received > limit:
                    refused = (413, message)
                    raise HTTPException(413, message)
            return event

        async def guarded_send(event):
            nonlocal started
            if refused is not None:
                return  # the app's answer to a truncated body is replaced by the refusal below
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refused is None:
                raise
        if refused is not None and not started:
            await _send_json(send, *refused)


# ------------------------------------------------------------------------------------------------ HTTP: schema
class GenerateRequest(BaseModel):
    """Unconditional generation with the model's prior."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    seconds: float = Field(5.0, ge=MIN_SECONDS, le=MAX_GENERATE_SECONDS, description="length of each excerpt")
    count: int = Field(1, ge=1, le=MAX_COUNT, description="how many excerpts")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="same seed, same audio")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="sampler steps; default: the model's setting")


class HealthResponse(BaseModel):
    status: str
    version: str


class ErrorResponse(BaseModel):
    detail: Any


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "the uploaded file cannot be used (undecodable, truncated, NaN/inf samples, silent, too short)",
    401: "missing or wrong X-API-Key", 409: "the served model has no prior (generate, vary)",
    413: "upload or audio longer than the limits", 415: "not a WAV, FLAC or Ogg file",
    422: "a parameter is out of range or malformed", 503: "the service is at capacity; retry later"}.items()}
def _errors(*codes: int) -> dict:
    return {code: ERRORS[code] for code in codes}


ZIP_RESPONSE = {200: {"content": {"application/zip": {}, "audio/wav": {}},
                      "description": "a zip of WAV files with metadata.json (or one WAV with format=wav)"}}

SeedParam = Annotated[int, Query(ge=0, le=MAX_SEED, description="same seed, same output")]
StepsParam = Annotated[int | None, Query(ge=1, le=MAX_STEPS,
                                         description="sampler steps (default: the model's diffusion.sampler_steps)")]

# FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc served from the package, so they work without internet
api = FastAPIOffline(title="UCR", version=ucr.__version__,
              description="Separate music into the components a UCR model learnt, generate new mixtures with its "
                          "prior, and vary real ones. Audio comes back as float32 WAV at the model's sample rate.")
api.mount("/ui", StaticFiles(directory=WEB_FOLDER), name="ui")
api.add_middleware(PagePolicyMiddleware)
api.add_middleware(UploadLimitMiddleware)
api.add_middleware(APIKeyMiddleware)  # added last = outermost: unauthenticated requests never reach the limits
api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="required on every path but /healthz when the service has a key")
PROTECTED = [Security(api_key_scheme)]  # documents the header in the schema; APIKeyMiddleware enforces it


@dataclass(frozen=True)
class _Runtime:
    settings: HTTPSettings
    api_key: str | None


def _finite(value: Any) -> Any:
    """JSON cannot carry NaN/inf: echo them as strings (a 422 often quotes the offending input)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


@api.exception_handler(RequestValidationError)
async def _validation_error(_request, err: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _finite(jsonable_encoder(err.errors()))}, status_code=422)


# ------------------------------------------------------------------------------------------------ HTTP: helpers
def _check_type(filename: str, content_type: str) -> None:
    extension = os.path.splitext(filename.lower())[1]
    media = content_type.split(";")[0].strip().lower()
    if extension:
        if extension not in SUPPORTED_EXTENSIONS:
            raise HTTPException(415, f"{filename!r}: {extension} files are not supported; upload WAV, FLAC or Ogg "
                                     f"(extensions {sorted(SUPPORTED_EXTENSIONS)})")
    elif media not in SUPPORTED_TYPES | GENERIC_TYPES:
        raise HTTPException(415, f"content type {media!r} is not supported; upload WAV, FLAC or Ogg "
                                 f"(audio/wav, audio/flac, audio/ogg)")


def _sniff(data: bytes) -> str | None:
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[:4] == b"OggS":
        return "OGG"
    return None


def _decode_upload(data: bytes, filename: str, content_type: str, settings: HTTPSettings) -> tuple:
    """Uploaded bytes -> (mono downmix ``[1, L]``, sample_rate, facts). Raises the HTTPException that names the
    problem: 415 type, 400 content, 413 duration."""
    _check_type(filename, content_type)
    if not data:
        raise HTTPException(400, f"{filename!r} is empty (0 bytes); upload a WAV, FLAC or Ogg file")
    kind = _sniff(data)
    if kind is None:
        raise HTTPException(400, f"{filename!r} could not be read: it is not a WAV, FLAC or Ogg file (the bytes do "
                                 f"not start like one); check the file or re-export it")
    try:
        header = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise HTTPException(400, f"{filename!r} could not be read as {kind} ({err}); check the file or re-export "
                                 f"it") from None
    try:
        audio.check_format(int(header.samplerate), int(header.channels), repr(filename))
    except audio.AudioError as err:
        raise HTTPException(400, str(err)) from None
    if header.samplerate > 0 and 0 < header.frames < audio.UNKNOWN_FRAMES:  # else: checked while decoding
        seconds = header.frames / header.samplerate
        if seconds > settings.max_seconds:
            raise HTTPException(413, f"{filename!r} is {seconds:.1f} s long; this service takes at most "
                                     f"{settings.max_seconds:g} s per request: cut it into excerpts")
    try:
        wave, rate = audio.decode_bytes(data, name=repr(filename), mono=False, max_seconds=settings.max_seconds)
    except audio.TooLongError as err:
        raise HTTPException(413, f"{err}; this service takes at most {settings.max_seconds:g} s per request: cut it "
                                 f"into excerpts") from None
    except audio.AudioError as err:
        raise HTTPException(400, f"{err}; upload finite audio in a complete file") from None
    channels, length = wave.shape
    seconds = length / rate
    if seconds > settings.max_seconds:
        raise HTTPException(413, f"{filename!r} is {seconds:.1f} s long; this service takes at most "
                                 f"{settings.max_seconds:g} s per request: cut it into excerpts")
    mono = audio.to_mono(wave)  # too short, silent: the pipeline's one check (audio.check_separable) -> 400
    # the model separates the mono downmix: only that crosses the handle (half the bytes of a stereo upload)
    return mono, rate, {"filename": filename, "format": kind, "sample_rate": rate, "channels": channels,
                        "seconds": round(seconds, 4)}


def _wav(wave, sample_rate: int) -> bytes:
    return audio.encode_bytes(wave, sample_rate, format="WAV")


def _zip(files: dict[str, bytes], metadata: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # float WAV barely compresses
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("metadata.json", json.dumps(metadata, indent=2))
    return buffer.getvalue()


def _headers(metadata: dict, filename: str) -> dict:
    model = metadata["model"]
    return {"X-UCR-Metadata": json.dumps(metadata, separators=(",", ":")),  # ASCII: json escapes the rest
            "X-UCR-Model": str(model["name"]), "X-UCR-Model-Version": str(model["version"] or ""),
            "X-UCR-Model-Alias": str(model["alias"] or ""), "X-UCR-Steps": str(metadata["steps"]),
            "X-UCR-Sample-Rate": str(metadata["sample_rate"]), "X-UCR-Components": str(metadata["n_components"]),
            "X-UCR-Duration": str(metadata["duration"]),
            "Content-Disposition": f'attachment; filename="{filename}"'}


def _metadata(task: str, result: dict, duration: float, **extra) -> dict:
    return {"task": task, "model": result["model"], "steps": result["steps"], "seed": result["seed"],
            "duration": round(duration, 4), "sample_rate": result["sample_rate"],
            "n_components": result["n_components"], "elapsed_s": result["elapsed_s"], **extra}


def _items_zip(task: str, prefix: str, result: dict, **extra) -> Response:
    """Zip of ``<prefix>_<i>/mixture.wav`` and ``<prefix>_<i>/component_<k>.wav`` for each generated item."""
    rate = result["sample_rate"]
    mixtures, components = result["mixtures"], result["components"]  # [N, L], [N, K, L]
    files = {}
    for i in range(len(mixtures)):
        files[f"{prefix}_{i}/mixture.wav"] = _wav(mixtures[i], rate)
        for k in range(components.shape[1]):
            files[f"{prefix}_{i}/component_{k}.wav"] = _wav(components[i, k], rate)
    metadata = _metadata(task, result, mixtures.shape[-1] / rate, count=len(mixtures), files=sorted(files), **extra)
    return Response(_zip(files, metadata), media_type="application/zip",
                    headers=_headers(metadata, f"ucr-{task}.zip"))


def _unwrap(result: dict) -> dict:
    if isinstance(result, Failure):
        raise HTTPException(result["status"], result["detail"])
    return result


def _busy(err: Exception) -> HTTPException:
    retry = getattr(err, "retry_after_s", None) or 1
    return HTTPException(503, "the model is at capacity (its queue is full); retry in a moment, or deploy more "
                              "replicas / raise max_queued_requests", headers={"Retry-After": str(int(retry))})


# ------------------------------------------------------------------------------------------------ HTTP: ingress
@serve.deployment(name="UCRIngress", max_ongoing_requests=64, max_queued_requests=128,
                  ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class UCRIngress:
    def __init__(self, model: DeploymentHandle, http: dict | None = None) -> None:
        settings = from_mapping(HTTPSettings, http, "http")
        self.model = model
        self.settings = settings
        api.state.runtime = _Runtime(settings, settings.resolved_api_key())  # read by the middleware (_runtime)

    async def _call(self, method: str, *args) -> dict:
        try:
            return _unwrap(await getattr(self.model, method).remote(*args))
        except (BackPressureError, DeploymentUnavailableError) as err:
            raise _busy(err) from None

    @api.get("/", include_in_schema=False)
    async def page(self, request: Request) -> HTMLResponse:
        """The web page (serve/web): separate, generate and vary in a browser, through this API."""
        root = request.scope.get("root_path", "").rstrip("/")
        html = PAGE_TEMPLATE.replace("{{ROOT}}", html_escape(root, quote=True))
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})  # PagePolicyMiddleware adds the policy

    @api.get("/healthz", response_model=HealthResponse, summary="liveness (no API key needed)")
    async def healthz(self) -> dict:
        return {"status": "ok", "version": ucr.__version__}

    @api.get("/model", dependencies=PROTECTED, responses=_errors(401, 503),
             summary="the served model: registry name, version, alias, source and a config summary")
    async def model_info(self) -> dict:
        info = await self._call("info")
        limits = {"max_upload_mb": self.settings.max_upload_mb, "max_seconds": self.settings.max_seconds,
                  "max_steps": MAX_STEPS, "max_count": MAX_COUNT}
        return {**info, "limits": limits}

    @api.post("/separate", dependencies=PROTECTED,
              responses={**ZIP_RESPONSE, **_errors(400, 401, 413, 415, 422, 503)},
              summary="separate an uploaded mixture into the model's K components")
    async def separate(
        self,
        file: Annotated[UploadFile, File(description="WAV, FLAC or Ogg; any sample rate; mono or stereo")],
        steps: StepsParam = None,
        seed: SeedParam = 0,
        mode: Annotated[Literal["independent", "mixture_consistent", "one_pass", "one_pass_residual"] | None,
                        Query(description="separation sampler (default: the model's diffusion.separation)")] = None,
        alpha: Annotated[float | None, Query(ge=0.0, le=1.0, description=(
            "one-pass modes: the blend level alpha* at which the mixture is noised before the decoder reads it "
            "(default: the model's diffusion.one_pass_alpha; the best value grows with training)"))] = None,
        output: Annotated[Literal["zip", "wav"],
                          Query(alias="format", description="zip of all components, or one WAV")] = "zip",
        component: Annotated[int | None, Query(ge=0, le=MAX_COMPONENTS - 1,
                                               description="only this component (needed with format=wav)")] = None,
    ) -> Response:
        if output == "wav" and component is None:
            raise HTTPException(422, "format=wav returns a single component: add component=<k> (see GET /model for "
                                     "K), or use format=zip for all of them")
        data = await file.read()
        wave, rate, facts = await run_in_threadpool(_decode_upload, data, file.filename or "upload",
                                                    file.content_type or "", self.settings)
        result = await self._call("separate", {"wave": wave, "sample_rate": rate, "steps": steps, "seed": seed,
                                               "mode": mode, "alpha": alpha, "component": component})
        out_rate, parts = result["sample_rate"], result["components"]  # [k, L]
        metadata = _metadata("separate", result, parts.shape[-1] / out_rate, mode=result["mode"],
                             alpha=result["alpha"], input=facts)
        if output == "wav":
            return Response(await run_in_threadpool(_wav, parts[0], out_rate), media_type="audio/wav",
                            headers=_headers(metadata, f"component_{component}.wav"))
        files = {f"component_{k}.wav": None for k in result["indices"]}
        metadata["files"] = sorted(files)

        def pack() -> bytes:
            encoded = {name: _wav(parts[i], out_rate) for i, name in enumerate(files)}
            return _zip(encoded, metadata)

        return Response(await run_in_threadpool(pack), media_type="application/zip",
                        headers=_headers(metadata, "ucr-separate.zip"))

    @api.post("/generate", dependencies=PROTECTED, responses={**ZIP_RESPONSE, **_errors(401, 409, 422, 503)},
              summary="generate new mixtures and their components with the model's prior")
    async def generate(self, request: GenerateRequest) -> Response:
        total = request.seconds * request.count
        if total > self.settings.max_seconds:
            raise HTTPException(422, f"count x seconds = {total:g} s is more than this service's limit of "
                                     f"{self.settings.max_seconds:g} s per request; ask for fewer or shorter "
                                     f"excerpts")
        result = await self._call("generate", request.model_dump())
        return await run_in_threadpool(_items_zip, "generate", "item", result)

    @api.post("/vary", dependencies=PROTECTED, responses={**ZIP_RESPONSE, **ERRORS},
              summary="keep some components of an uploaded mixture and regenerate the others")
    async def vary(
        self,
        file: Annotated[UploadFile, File(description="WAV, FLAC or Ogg; any sample rate; mono or stereo")],
        keep: Annotated[list[int], Query(max_length=MAX_COMPONENTS,
                                         description="components to keep (repeat: keep=0&keep=2); the rest are "
                                                     "regenerated")] = [],  # noqa: B006 - FastAPI copies defaults
        seed: SeedParam = 0,
        count: Annotated[int, Query(ge=1, le=MAX_COUNT, description="how many variations")] = 1,
        steps: StepsParam = None,
    ) -> Response:
        data = await file.read()
        wave, rate, facts = await run_in_threadpool(_decode_upload, data, file.filename or "upload",
                                                    file.content_type or "", self.settings)
        if facts["seconds"] * count > self.settings.max_seconds:
            raise HTTPException(422, f"count x input length = {facts['seconds'] * count:.1f} s is more than this "
                                     f"service's limit of {self.settings.max_seconds:g} s per request; ask for fewer "
                                     f"variations or upload a shorter excerpt")
        result = await self._call("vary", {"wave": wave, "sample_rate": rate, "keep": keep, "seed": seed,
                                           "count": count, "steps": steps})
        return await run_in_threadpool(_items_zip, "vary", "variation", result, keep=result["keep"], input=facts)


# ------------------------------------------------------------------------------------------------ building the app
def app_builder(args: dict | None = None):
    """The Serve application. ``args`` (strings are fine, as ``serve run`` passes them): see :class:`AppArgs`."""
    parsed = AppArgs.from_dict(args)
    model = UCRModel.options(
        num_replicas=parsed.model_replicas, max_ongoing_requests=parsed.model_max_ongoing_requests,
        max_queued_requests=parsed.model_max_queued_requests,
        ray_actor_options={"num_cpus": parsed.model_num_cpus},
        user_config=dataclasses.asdict(parsed.model_settings()),
    ).bind()
    ingress = UCRIngress.options(
        num_replicas=parsed.ingress_replicas, max_ongoing_requests=parsed.ingress_max_ongoing_requests,
        max_queued_requests=parsed.ingress_max_queued_requests,
    )
    return ingress.bind(model, dataclasses.asdict(parsed.http_settings()))


app = app_builder({})  # `serve run serve.app:app`: settings from the environment (UCR_MODEL, MLFLOW_TRACKING_URI)
