"""How the Vertex backend reaches Google: one host per location, credentials, retries, and tuneform's labels.

Vertex AI serves each location from its own host: ``{region}-aiplatform.googleapis.com`` for a region and
``aiplatform.{us|eu}.rep.googleapis.com`` for the multi-region locations where tuned Gemini 3.x models are served
(sources.yaml: V-locations, V-sft-use). A request sent to another location's host is refused, so every client here is
built for the location of the resource it touches.

Google Cloud modules are imported inside functions: providers import the backend, and Pulumi pickles providers.
"""

from __future__ import annotations

import enum
import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tuneform.backends.base import BackendError, Progress

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1

T = TypeVar("T")

SPEC_HASH_LABEL = "tuneform-spec-hash"
NAME_LABEL = "tuneform-name"
VERSION_LABEL = "tuneform-version"
MANAGED_BY_LABEL = "managed-by"
STACK_LABEL = "tuneform-stack"
"""The Pulumi stack a job belongs to: two stacks of one project and region never adopt, continue from or delete
each other's jobs (a job without it, made before it existed, belongs to any)."""
OWN_LABELS = (SPEC_HASH_LABEL, NAME_LABEL, VERSION_LABEL, MANAGED_BY_LABEL, STACK_LABEL)

MULTI_REGIONS = ("us", "eu")

TERMINAL_STATES = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
     "JOB_STATE_PARTIALLY_SUCCEEDED"}
)  # fmt: skip
"""Every state a job never leaves. The SDK's ``has_ended`` misses EXPIRED and PARTIALLY_SUCCEEDED."""

LIVE_STATES = frozenset(
    {"JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_PAUSED", "JOB_STATE_UPDATING",
     "JOB_STATE_CANCELLING"}
)  # fmt: skip
"""States of a job that is still going (CANCELLING may yet end SUCCEEDED: cancellation is best effort)."""


def label_value(text: str) -> str:
    """``text`` as a valid GCP label value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def state_name(job: Any) -> str:
    # A state newer than the installed client arrives as a bare int rather than an enum member.
    return job.state.name if isinstance(job.state, enum.Enum) else f"JOB_STATE_{int(job.state)}"


def short(state: str) -> str:
    return state.removeprefix("JOB_STATE_")


def location_of(name: str) -> str:
    """``projects/P/locations/L/...`` -> ``L``."""
    parts = name.split("/")
    if len(parts) < 4 or parts[2] != "locations":
        raise BackendError(f"not a Vertex AI resource name: {name!r}")
    return parts[3]


def api_errors(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Turn what Google's clients raise into a ``BackendError`` that names the operation, for the user to read."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> T:
            import requests
            from google.api_core import exceptions
            from google.auth import exceptions as auth_exceptions

            try:
                return fn(*args, **kwargs)
            except exceptions.GoogleAPICallError as e:
                raise BackendError(f"vertex: {what} failed: {e.message}") from None
            except auth_exceptions.DefaultCredentialsError:
                raise BackendError(
                    f"vertex: {what} needs Google credentials and found none: run `gcloud auth application-default "
                    "login`, or give CI a workload identity (see the README's Vertex AI section)"
                ) from None
            except auth_exceptions.RefreshError as e:
                raise BackendError(f"vertex: {what} failed: Google credentials could not be refreshed ({e})") from None
            except (requests.exceptions.ConnectionError, auth_exceptions.TransportError) as e:
                raise BackendError(
                    f"vertex: {what} failed: Google could not be reached ({e}). A job already created keeps running; "
                    "the next `pulumi up` finds it."
                ) from None

        return inner

    return wrap


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Hosts:
    """Where each location's API is: Google's hosts, or an override per location (the emulator in tests).

    Args:
        overrides: Location -> base URL; the key ``*`` applies to every location without one of its own.
    """

    overrides: dict[str, str] = field(default_factory=dict)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    def endpoint(self, location: str) -> str:
        """The API host of ``location`` (``host`` or ``http://host:port`` for an override)."""
        override = self.overrides.get(location) or self.overrides.get("*")
        if override:
            return override.rstrip("/")
        if location in MULTI_REGIONS:
            return f"aiplatform.{location}.rep.googleapis.com"
        if location == "global":
            return "aiplatform.googleapis.com"
        return f"{location}-aiplatform.googleapis.com"

    def base_url(self, location: str) -> str:
        """The same, always as a URL (for outputs a client is pointed at)."""
        host = self.endpoint(location)
        return host if "://" in host else f"https://{host}"

    def client_kwargs(self, location: str) -> dict[str, Any]:
        """``client_options``, ``transport`` and (for a plain-HTTP emulator only) anonymous credentials."""
        host = self.endpoint(location)
        return {"client_options": {"api_endpoint": host}, "transport": "rest", **emulator_credentials(host)}

    def _client(self, kind: str, location: str) -> Any:
        # One client per service and location: each builds an authorised HTTP session (credentials looked up anew,
        # from the metadata server on GCE), which loops over versions or endpoints must not pay each time.
        client = self._clients.get((kind, location))
        if client is None:
            from google.cloud import aiplatform_v1beta1

            client = getattr(aiplatform_v1beta1, kind)(**self.client_kwargs(location))
            self._clients[(kind, location)] = client
        return client

    def tuning(self, location: str) -> aiplatform_v1beta1.GenAiTuningServiceClient:
        return self._client("GenAiTuningServiceClient", location)

    def models(self, location: str) -> aiplatform_v1beta1.ModelServiceClient:
        return self._client("ModelServiceClient", location)

    def endpoints(self, location: str) -> aiplatform_v1beta1.EndpointServiceClient:
        return self._client("EndpointServiceClient", location)

    def model_garden(self, location: str) -> aiplatform_v1beta1.ModelGardenServiceClient:
        return self._client("ModelGardenServiceClient", location)


def emulator_credentials(endpoint: str | None) -> dict[str, Any]:
    """Anonymous credentials for a plain-HTTP endpoint, else nothing (the client finds the real ones)."""
    if endpoint and endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        # Only emulators speak plain HTTP; never send real credentials to one.
        return {"credentials": AnonymousCredentials()}
    return {}


@dataclass(frozen=True)
class Retry:
    """Retries of 429, 503 and 504 with exponential back-off (Google's API errors page: retry with back-off)."""

    initial: float
    timeout: float

    def call(self, fn: Callable[..., T], report: Progress | None = None, /, **kwargs: Any) -> T:
        """``fn(**kwargs)``, retried; a persistent failure becomes a ``BackendError`` that says what to do."""
        import requests
        from google.api_core import exceptions, retry
        from google.auth import exceptions as auth_exceptions

        def on_error(e: BaseException) -> None:
            (stderr if report is None else report)(f"vertex: {e}; retrying")

        policy = retry.Retry(
            # A dropped connection is as passing as a 503: a wait of hours must not end on one network blip.
            predicate=retry.if_exception_type(
                exceptions.TooManyRequests,
                exceptions.ServiceUnavailable,
                exceptions.GatewayTimeout,
                requests.exceptions.ConnectionError,
                auth_exceptions.TransportError,
            ),
            initial=self.initial,
            maximum=self.initial * 30,
            multiplier=2.0,
            timeout=self.timeout,
            on_error=on_error,
        )
        try:
            return policy(fn)(**kwargs)
        except exceptions.RetryError as e:
            raise BackendError(
                f"vertex: still failing after retrying for {self.timeout:.0f} s: {e.cause}. "
                "Vertex AI is unavailable or throttling this project; run `pulumi up` again later."
            ) from None
