"""Building an object store destination from its URL, without a request.

``s3://bucket/prefix``, ``gs://bucket/prefix`` and ``az://container/prefix`` become
obstore stores scoped to the prefix. What the URL may not hold: user information (a
secret has no place in a URL that reaches logs and manifests), a port, a query, a
fragment, or a prefix that is not a valid key. ``endpoint_url`` is the S3 endpoint,
the GCS base URL or the Azure blob endpoint; plain http only to loopback unless
``StoreSettings.allow_http``. Every refusal is a ConfigError (exit 2), one line, that
quotes no credentials.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from obstore.store import AzureStore, GCSStore, S3Store

from ..errors import ConfigError, InvalidKey
from .base import check_key
from .objectstore import ObjectStoreDestination, StoreSettings
from .storeerrors import describe, environment_secrets

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

SCHEMES = ("s3", "gs", "az")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_object_store(
    url: str, *, endpoint_url: str | None = None, settings: StoreSettings | None = None
) -> ObjectStoreDestination:
    """The destination for an ``s3://``, ``gs://`` or ``az://`` URL; ConfigError for a
    URL that is malformed, carries credentials, or names a store obstore cannot build
    (an Azure URL without an account, say). No request is made."""
    settings = settings or StoreSettings()
    scheme, location = _store_location(url)
    client, endpoint = _client_options(endpoint_url, settings)
    store = _build_store(scheme, location, endpoint, client, _retry_config(settings))
    return ObjectStoreDestination(store, location, settings=settings, endpoint=endpoint)


def _store_location(url: str) -> tuple[str, str]:
    """The scheme of a store URL, and the URL as the store is opened and shown:
    ``scheme://bucket[/prefix]``, with the prefix checked and its slashes trimmed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    bucket = parts.netloc
    if scheme not in SCHEMES:
        raise ConfigError(f"{scheme}://: not an object store URL (s3://, gs://, az://)")
    # Bucket and container names hold neither "@" nor ":"; either one means user
    # information ("KEY:SECRET@bucket", and a secret may even hold a "/" that ends the
    # host part early). Such a URL is refused without quoting any of it.
    if "@" in bucket or ":" in bucket:
        raise ConfigError(
            f"{scheme}://***: credentials in a storage URL are refused; "
            "set them in the environment (AWS_*, GOOGLE_*, AZURE_*)"
        )
    if not bucket or parts.query or parts.fragment:
        raise ConfigError(f"{scheme}://{bucket}: expected {scheme}://BUCKET/PREFIX")
    shown = f"{scheme}://{bucket}"
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except InvalidKey as error:
            raise ConfigError(f"{shown}: bad prefix: {error}") from None
    return scheme, shown + (f"/{prefix}" if prefix else "")


def _client_options(
    endpoint_url: str | None, settings: StoreSettings
) -> tuple[ClientConfig, str | None]:
    """The HTTP client's timeouts, and the endpoint (None: the provider's own) once it
    is checked: http or https, no credentials, plain http only where allowed."""
    client: ClientConfig = {
        "connect_timeout": timedelta(seconds=settings.connect_timeout),
        "timeout": timedelta(seconds=settings.request_timeout),
    }
    if not endpoint_url:
        return client, None
    endpoint_parts = urlsplit(endpoint_url)
    host = endpoint_parts.hostname or ""
    if endpoint_parts.scheme not in ("http", "https") or not host:
        raise ConfigError("the endpoint URL must be http://HOST[:PORT] or https://...")
    if "@" in endpoint_parts.netloc:
        raise ConfigError("credentials in the endpoint URL are refused")
    if endpoint_parts.scheme == "http":
        if not (_is_loopback(host) or settings.allow_http):
            raise ConfigError(
                f"plain http to {host} would send the data unencrypted; "
                "use https (http is accepted for loopback endpoints)"
            )
        client["allow_http"] = True
    return client, endpoint_url.rstrip("/")


def _retry_config(settings: StoreSettings) -> RetryConfig:
    return {
        "max_retries": settings.request_retries,
        "retry_timeout": timedelta(seconds=settings.retry_timeout),
        "backoff": {
            "init_backoff": timedelta(seconds=settings.retry.base_delay),
            "max_backoff": timedelta(seconds=settings.retry.max_delay),
            "base": 2,
        },
    }


def _build_store(
    scheme: str,
    location: str,
    endpoint: str | None,
    client: ClientConfig,
    retry: RetryConfig,
) -> ObjectStore:
    """The obstore store for ``location``; ConfigError, quoting no credentials, when
    obstore refuses to build it (an Azure URL without an account, say)."""
    try:
        if scheme == "s3":
            if endpoint:
                return S3Store.from_url(
                    location, endpoint=endpoint, client_options=client, retry_config=retry
                )
            return S3Store.from_url(location, client_options=client, retry_config=retry)
        if scheme == "gs":
            if endpoint:
                return GCSStore.from_url(
                    location, base_url=endpoint, client_options=client, retry_config=retry
                )
            return GCSStore.from_url(location, client_options=client, retry_config=retry)
        if endpoint:
            return AzureStore.from_url(
                location, endpoint=endpoint, client_options=client, retry_config=retry
            )
        return AzureStore.from_url(location, client_options=client, retry_config=retry)
    except Exception as error:
        raise ConfigError(f"{location}: {describe(error, environment_secrets())}") from None
