"""Object store failures: which deserve another try, and how they read in one line.

obstore raises ``FileNotFoundError`` for a missing object (and for a missing bucket),
``PermissionDeniedError`` (403), ``UnauthenticatedError`` (401), and for the rest a
``GenericError`` whose text names the HTTP status or the network failure, followed by
a multi-line debug dump that may quote the request URL and the server's XML reply.

Transient: HTTP 408, 429 and 5xx, and failures to connect, send or receive (timeouts
included). Everything else (404, 403, 401, 400, invalid paths, unsupported operations)
is permanent: waiting will not change it, so it fails at once.

Messages: the first line only, query strings cut from URLs (an Azure SAS token or a
presigned signature travels in the query), the server's error code added, and every
credential value found in the environment replaced by ``***``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from obstore.exceptions import (
    AlreadyExistsError,
    GenericError,
    InvalidPathError,
    NotModifiedError,
    NotSupportedError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
    UnknownConfigurationKeyError,
)

from ..redact import scrub_text
from ..retry import RetryPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The environment variables through which obstore takes secrets (see S3Config,
# GCSConfig, AzureConfig). Their values are scrubbed from every message.
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_BEARER_TOKEN",
)
# Shorter values ("test" in a test setup) would blank out ordinary words; real keys and
# tokens are far longer.
_MIN_SECRET_LENGTH = 8

_PERMANENT = (
    FileNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    InvalidPathError,
    NotSupportedError,
    AlreadyExistsError,
    PreconditionError,
    NotModifiedError,
    UnknownConfigurationKeyError,
    ValueError,
    TypeError,
)
_STATUS = re.compile(r"status(?: code)?:? (\d{3})\b")
_NETWORK_WORDS = re.compile(
    r"error sending request|timed out|timeout|connect|connection|broken pipe|reset by peer"
    r"|HTTP error|error decoding response body|incomplete message",
    re.IGNORECASE,
)
_URL_QUERY = re.compile(r"(https?://[^\s?\"'<>]+)\?[^\s\"'<>]*")
_TIMING = re.compile(r" in \d+(?:\.\d+)?(?:ns|µs|us|ms|s)\b")
_RETRY_SETTINGS = re.compile(r",? max_retries: \d+, retry_timeout: \S+")
_XML_CODE = re.compile(r"<Code>([^<]{1,80})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,200})</Message>")


def environment_secrets() -> list[str]:
    """The credential values set in the environment, longest first."""
    values = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def http_status(error: BaseException) -> int | None:
    match = _STATUS.search(str(error))
    return int(match.group(1)) if match else None


def is_transient(error: BaseException) -> bool:
    """True for failures that may well be gone a moment later."""
    if isinstance(error, _PERMANENT):
        return False
    if not isinstance(error, GenericError | OSError):
        return False
    status = http_status(error)
    if status is not None:
        return status in (408, 429) or status >= 500
    return bool(_NETWORK_WORDS.search(str(error)))


def describe(error: BaseException, secrets: Sequence[str] = ()) -> str:
    """One line about ``error``, without credentials (see the module docstring)."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    if "<?xml" in line or "<Error>" in line:
        line = re.split(r"<\?xml|<Error>", line, maxsplit=1)[0].rstrip(" :")
    code = _XML_CODE.search(text)
    if code:
        message = _XML_MESSAGE.search(text)
        line += f" ({code.group(1)}" + (f": {message.group(1)})" if message else ")")
    line = _URL_QUERY.sub(r"\1", line)
    # obstore's timing and retry settings say nothing a user can act on.
    line = re.sub(r"\s{2,}", " ", _TIMING.sub("", _RETRY_SETTINGS.sub("", line)))
    if len(line) > 400:
        line = line[:397] + "..."
    return scrub_text(line, list(secrets))


def with_retries(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again after a transient failure, at most ``policy.retries``
    times, waiting ``policy.delay(n)`` before retry n. The last failure, or the first
    permanent one, is raised as it is. Only for calls that can be repeated whole: a
    stream already consumed cannot be sent again."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as error:
            if attempt >= policy.retries or not is_transient(error):
                raise
            attempt += 1
            delay = policy.delay(attempt)
            logger.warning(
                "%s failed (%s); retry %d of %d in %.1f s",
                what,
                describe(error, environment_secrets()),
                attempt,
                policy.retries,
                delay,
            )
            sleep(delay)
