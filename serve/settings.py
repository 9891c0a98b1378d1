"""Settings of the Serve application, as frozen dataclasses: the model deployment's ``user_config``
(:class:`ModelSettings`, reconfigurable in place), the ingress's limits (:class:`HTTPSettings`) and the arguments of
``serve.app.app_builder`` (:class:`AppArgs`). Unknown keys raise, naming the valid ones."""

import os
from dataclasses import dataclass
from typing import Any

from serve.source import DEFAULT_MODEL
from ucr.config import build_settings
from ucr.audio import MIN_SECONDS


def from_mapping(cls, values: dict | None, what: str):
    """Build a settings dataclass from a dict (CLI strings accepted), naming unknown keys and the valid ones."""
    return build_settings(cls, values, what, from_text=True)


@dataclass(frozen=True)
class ModelSettings:
    """The model deployment's ``user_config``: change it (``serve deploy`` or ``serve.run``) to reconfigure the
    running replicas in place."""

    model: str = DEFAULT_MODEL  # models:/<name>@<alias>, models:/<name>/<version>, or a checkpoint path / s3:// URI
    tracking_uri: str | None = None  # MLflow tracking/registry URI; None: MLFLOW_TRACKING_URI of the replica
    device: str = "cpu"  # torch device of the pipeline ("auto" picks CUDA when there is one)
    batching: bool = True  # separation through @serve.batch (False: each request on its own thread)
    max_batch_size: int = 4  # separation requests per batch call
    batch_wait_timeout_s: float = 0.02  # how long a batch waits to fill up
    reload: int | str = 0  # change it to load the reference again (e.g. after moving an alias to a new version)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must name a model (e.g. {DEFAULT_MODEL}), got {self.model!r}")
        if not isinstance(self.max_batch_size, int) or not 1 <= self.max_batch_size <= 64:
            raise ValueError(f"max_batch_size must be an integer in [1, 64], got {self.max_batch_size!r}")
        if not isinstance(self.batch_wait_timeout_s, (int, float)) or not 0 <= self.batch_wait_timeout_s <= 10:
            raise ValueError(f"batch_wait_timeout_s must be in [0, 10] seconds, got {self.batch_wait_timeout_s!r}")

    @classmethod
    def from_dict(cls, values: dict | None) -> "ModelSettings":
        return from_mapping(cls, values, "user_config")

    def load_key(self) -> tuple:
        """Settings whose change means loading the model again (batching settings apply without a reload)."""
        return (self.model, self.tracking_uri, self.device, self.reload)


@dataclass(frozen=True)
class HTTPSettings:
    """The ingress's limits and authentication."""

    api_key: str | None = None  # None: UCR_API_KEY, or the file named by UCR_API_KEY_FILE, of the replica
    max_upload_mb: float = 25.0  # request body limit (413 above it)
    max_seconds: float = 60.0  # longest upload, and most generated audio per request (count x seconds)
    public_docs: bool = False  # serve /docs and /openapi.json without the API key
    # a request body that stalls (no bytes for body_idle_timeout_s) or trickles (not complete after
    # body_timeout_s) is answered 408 and its slot freed: slow senders cannot hold every ongoing-request slot
    body_idle_timeout_s: float = 15.0
    body_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be positive, got {self.max_upload_mb!r}")
        for name in ("body_idle_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ValueError(f"{name} must be in (0, 3600] seconds, got {value!r}")
        if self.body_idle_timeout_s > self.body_timeout_s:
            raise ValueError(f"body_idle_timeout_s ({self.body_idle_timeout_s}) must not exceed body_timeout_s "
                             f"({self.body_timeout_s})")
        if not MIN_SECONDS <= self.max_seconds <= 3600:
            raise ValueError(f"max_seconds must be in [{MIN_SECONDS}, 3600], got {self.max_seconds!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def resolved_api_key(self) -> str | None:
        """The key from the settings, else ``UCR_API_KEY``, else the file ``UCR_API_KEY_FILE`` names; ``None``
        (no authentication) only when none of them is set at all. Fails closed: a key that is set but empty (an
        empty variable, an empty or unreadable file) raises instead of silently turning authentication off."""
        if self.api_key is not None:
            if not self.api_key.strip():
                raise ValueError("the API key given in the settings is empty; give a non-empty key, or none at all "
                                 "to run without authentication")
            return self.api_key
        if "UCR_API_KEY" in os.environ:
            key = os.environ["UCR_API_KEY"].strip()
            if not key:
                raise ValueError("UCR_API_KEY is set but empty; set it to the key, or unset it to run without "
                                 "authentication")
            return key
        path = os.environ.get("UCR_API_KEY_FILE")
        if path is not None:
            try:
                with open(path, encoding="utf-8") as handle:
                    key = handle.read().strip()
            except OSError as err:
                raise ValueError(f"UCR_API_KEY_FILE={path!r} cannot be read ({err.strerror})") from None
            if not key:
                raise ValueError(f"UCR_API_KEY_FILE={path!r} is empty; write the key into it, or unset the "
                                 f"variable to run without authentication")
            return key
        return None


def _env_default(name: str, fallback: Any) -> Any:
    return os.environ.get(name) or fallback


@dataclass(frozen=True)
class AppArgs:
    """Arguments of :func:`app_builder` (``serve run serve.app:app_builder key=value ...`` or ``args:`` in a Serve
    config). Defaults come from the environment where noted; ``serve deploy`` configs usually override the
    deployment settings (replicas, queues) in their ``deployments:`` section instead."""

    model: str = ""  # default: UCR_MODEL, else models:/ucr@champion
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI (passed on to the model replicas)
    device: str = "cpu"
    batching: bool = True
    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.02
    reload: int | str = 0
    api_key: str | None = None  # prefer UCR_API_KEY / UCR_API_KEY_FILE in the replicas' environment
    max_upload_mb: float = 25.0
    max_seconds: float = 60.0
    public_docs: bool = False
    body_idle_timeout_s: float = 15.0  # 408 when an upload sends nothing for this long
    body_timeout_s: float = 120.0  # 408 when an upload is not complete after this long
    model_replicas: int = 1
    model_num_cpus: float = 1.0
    model_max_ongoing_requests: int = 8  # requests a model replica works on or holds in its batch queue
    model_max_queued_requests: int = 16  # requests waiting per caller before 503
    ingress_replicas: int = 1
    ingress_max_ongoing_requests: int = 64
    ingress_max_queued_requests: int = 128

    @classmethod
    def from_dict(cls, values: dict | None) -> "AppArgs":
        return from_mapping(cls, values, "app")

    def model_settings(self) -> ModelSettings:
        return ModelSettings(model=self.model or _env_default("UCR_MODEL", DEFAULT_MODEL),
                             tracking_uri=self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
                             device=self.device, batching=self.batching, max_batch_size=self.max_batch_size,
                             batch_wait_timeout_s=self.batch_wait_timeout_s, reload=self.reload)

    def http_settings(self) -> HTTPSettings:
        return HTTPSettings(api_key=self.api_key, max_upload_mb=self.max_upload_mb,
                            max_seconds=self.max_seconds, public_docs=self.public_docs,
                            body_idle_timeout_s=self.body_idle_timeout_s, body_timeout_s=self.body_timeout_s)
