"""Keeping credentials out of everything the tool prints or writes.

A connection string may carry ``user:password@``; driver exceptions sometimes echo the
URI or the user name back. Everything that reaches a log line, an error message, the
manifest or stdout passes through :func:`redact_uri` (for URIs we build text from) or
:func:`scrub_text` (for text someone else built, such as an exception message).
"""

from __future__ import annotations

import re
import urllib.parse

# Matches the user-info part of any mongodb:// or mongodb+srv:// URI inside free text. A
# password may hold an unencoded space (the driver accepts it), so the match runs to the
# last "@" before a "/" or the end of the line: redacting too much is the safe mistake.
_URI_USERINFO = re.compile(r"(mongodb(?:\+srv)?://)[^/\n]*@", re.IGNORECASE)
# Query options whose values are secrets in their own right.
_SECRET_OPTIONS = re.compile(
    r"((?:tlsCertificateKeyFilePassword|sslPEMKeyPassword|authMechanismProperties)=)[^&\s]*",
    re.IGNORECASE,
)

REDACTED = "***"


def redact_uri(uri: str) -> str:
    """The URI with user name, password and secret options replaced by ``***``."""
    text = _URI_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", uri)
    return _SECRET_OPTIONS.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def uri_secrets(uri: str) -> list[str]:
    """The literal secret strings in a URI (user, password, both raw and decoded)."""
    credentials = userinfo(uri)
    secrets: list[str] = []
    if credentials:
        user, _, password = credentials.partition(":")
        for part in (credentials, password, user):
            if part:
                secrets.extend({part, urllib.parse.unquote(part)})
    for option in _SECRET_OPTIONS.finditer(uri):
        value = uri[option.end(1) : option.end()]
        if value:
            secrets.extend({value, urllib.parse.unquote(value)})
    # Longest first, so that "user:password" is replaced before "user" alone.
    return sorted({s for s in secrets if len(s) >= 2}, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with URI credentials and every literal secret replaced by ``***``."""
    text = redact_uri(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def authority(uri: str) -> str:
    """``user:password@hosts`` of a mongodb:// URI. The hosts start after the last "@"
    (an unencoded space or "?" in a password must not cut it short); an "@" further on,
    in a path or an option, only makes the user part longer: redacting too much is safe."""
    match = re.match(r"mongodb(?:\+srv)?://(.*)", uri.strip(), re.IGNORECASE | re.DOTALL)
    if not match:
        return ""
    rest = match.group(1)
    at = rest.rfind("@")
    hosts = rest[at + 1 :]
    end = re.search(r"[/?]", hosts)
    return rest[: at + 1 + (end.start() if end else len(hosts))]


def userinfo(uri: str) -> str:
    """``user:password`` of a mongodb:// URI as written (percent-encoded), or ``""``."""
    return authority(uri).rpartition("@")[0]


def hosts_of(uri: str) -> list[str]:
    """The host list of a mongodb:// URI, without credentials or options."""
    hosts = authority(uri).rpartition("@")[2]
    return [host for host in hosts.split(",") if host and not host.isspace()]
