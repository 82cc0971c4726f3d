"""The one outbound HTTP client. Every call to another party goes through `http_request`.

It sets timeouts, a User-Agent, and turns transport failures into AdapterError with `permanent`
telling callers whether a retry can help: connection errors, timeouts, 5xx, 408 and 429 are
transient; any other 4xx is permanent (the same request will be refused again).
Tests fake other parties with a real local server, or patch this module's `http_request`.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
from django.conf import settings

from common.exceptions import AdapterError

USER_AGENT = "flexmarket/0.1 (+https://github.com/flexmarket)"
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}

_local = threading.local()


def _client() -> httpx.Client:
    """One pooled client per thread (httpx clients are not shared across threads here for safety)."""
    client = getattr(_local, "client", None)
    if client is None or client.is_closed:
        client = httpx.Client(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        _local.client = client
    return client


def http_request(
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> httpx.Response:
    """Send one request and return the response; raise AdapterError for transport failures and HTTP >= 400."""
    # Timeouts are read per request, so a settings change applies to pooled clients too.
    read_timeout = timeout_s if timeout_s is not None else settings.HTTP_READ_TIMEOUT_S
    kwargs: dict[str, Any] = {
        "headers": headers or {},
        "params": params,
        "timeout": httpx.Timeout(read_timeout, connect=settings.HTTP_CONNECT_TIMEOUT_S),
    }
    if json is not None:
        kwargs["json"] = json
    try:
        response = _client().request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise AdapterError(f"{method} {url} timed out: {exc}", permanent=False) from exc
    except httpx.TransportError as exc:
        raise AdapterError(f"{method} {url} failed: {exc}", permanent=False) from exc
    if response.status_code >= 400:
        permanent = response.status_code not in TRANSIENT_STATUS and response.status_code < 500
        raise AdapterError(
            f"{method} {url} answered HTTP {response.status_code}: {response.text[:300]}",
            permanent=permanent,
            status_code=response.status_code,
        )
    return response
