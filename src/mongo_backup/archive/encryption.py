"""Client-side encryption of archives with age (https://age-encryption.org), via pyrage.

``backup --encrypt-to RECIPIENT`` (repeatable) encrypts the finished archive to every
recipient: an age X25519 public key (``age1...``), an SSH public key (``ssh-ed25519 ...``,
``ssh-rsa ...``), or a file of them, one per line (``age -R``). The result,
``backup_{ts}.tar.zst.age``, is a standard age file: ``age -d -i key.txt`` decrypts it,
manifest included, so nothing about the data is readable without a key.

``restore``, ``verify`` and ``inspect`` take ``--identity FILE``: an age identity file
(``AGE-SECRET-KEY-1...`` lines, comments allowed) or an unencrypted SSH private key.

:class:`DecryptedStream` decrypts a stream as it is read (``restore -`` of an encrypted
pipe).

Contracts: encryption and decryption stream (files of any size, constant memory); a
wrong identity or a damaged file is an :class:`ArchiveError` of one line (exit 1); a
recipient or identity that cannot be read is a :class:`ConfigError` (exit 2). Secret
keys never appear in messages.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import IO, Any

import pyrage
from pyrage import ssh, x25519

from ..errors import ArchiveError, ConfigError
from ..files import private_file

SUFFIX = ".age"
_SSH_PREFIXES = ("ssh-ed25519 ", "ssh-rsa ")


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(SUFFIX)


def _recipient(text: str, where: str) -> Any:
    try:
        if text.startswith("age1"):
            return x25519.Recipient.from_str(text)
        if text.startswith(_SSH_PREFIXES):
            return ssh.Recipient.from_str(text)
    except Exception:  # pyrage raises its own RecipientError and ValueErrors
        raise ConfigError(f"--encrypt-to: {where} is not a valid age or SSH public key") from None
    raise ConfigError(
        f"--encrypt-to: {where} is neither an age public key (age1...), an SSH public key "
        "(ssh-ed25519/ssh-rsa) nor a file of them"
    )


def recipients(values: list[str]) -> list[Any]:
    """The recipients named by ``--encrypt-to`` values (keys, or files of keys)."""
    found: list[Any] = []
    for value in values:
        text = value.strip()
        if text.startswith(("age1", *_SSH_PREFIXES)):
            found.append(_recipient(text, repr(text[:24] + "...")))
            continue
        path = Path(value)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"--encrypt-to {value}: cannot read it ({error})") from None
        keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not keys:
            raise ConfigError(f"--encrypt-to {value}: no public key in the file")
        found += [_recipient(key, f"line {n} of {value}") for n, key in enumerate(keys, 1)]
    return found


def identities(path: Path) -> list[Any]:
    """The identities in an age identity file or an SSH private key file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--identity {path}: cannot read it ({error.strerror})") from None
    if b"PRIVATE KEY" in data:
        try:
            return [ssh.Identity.from_buffer(data)]
        except Exception:
            raise ConfigError(
                f"--identity {path}: not a usable SSH private key (an unencrypted "
                "ed25519 or RSA key is needed)"
            ) from None
    keys = [
        line.strip()
        for line in data.decode("utf-8", "replace").splitlines()
        if line.strip().startswith("AGE-SECRET-KEY-")
    ]
    if not keys:
        raise ConfigError(f"--identity {path}: no age secret key (AGE-SECRET-KEY-1...) in it")
    try:
        return [x25519.Identity.from_str(key) for key in keys]
    except Exception:
        raise ConfigError(f"--identity {path}: a secret key in it is malformed") from None


def encrypt_file(source: Path, target: Path, to: list[Any]) -> None:
    """Encrypt ``source`` into ``target`` (a new private file) for every recipient."""
    with open(source, "rb") as reader, private_file(target) as writer:
        try:
            pyrage.encrypt_io(reader, writer, to)
        except Exception as error:
            raise ArchiveError(f"encrypting {source.name} failed: {error}") from None


def decrypt_file(source: Path, target: Path, keys: list[Any], shown: str) -> None:
    """Decrypt ``source`` into ``target``; ArchiveError if no identity fits."""
    with open(source, "rb") as reader, private_file(target) as writer:
        try:
            pyrage.decrypt_io(reader, writer, keys)
        except Exception as error:
            raise _cannot_decrypt(error, shown) from None


def _cannot_decrypt(error: BaseException, shown: str) -> ArchiveError:
    reason = str(error) or type(error).__name__
    if "No matching keys" in reason:
        reason = "none of the --identity keys can open it (wrong key?)"
    return ArchiveError(f"cannot decrypt {shown}: {reason}")


class DecryptedStream:
    """``raw`` (an age stream) decrypted as it is read: pyrage on a thread of its own,
    writing into a pipe, so memory stays flat. A failure to decrypt (a wrong key, a
    damaged or cut stream) ends the plain bytes early, and the read that meets that end
    raises it as one :class:`ArchiveError`. :meth:`close` stops the thread (what it had
    not written yet is lost) and waits for it."""

    def __init__(self, raw: IO[bytes], keys: list[Any], shown: str) -> None:
        read_end, write_end = os.pipe()
        self._plain = os.fdopen(read_end, "rb")
        self._shown = shown
        self._failure: list[BaseException] = []

        def feed() -> None:
            pipe = os.fdopen(write_end, "wb")
            try:
                pyrage.decrypt_io(raw, pipe, keys)
            except BaseException as error:  # its reader meets the early end
                self._failure.append(error)
            finally:
                with contextlib.suppress(OSError):  # a reader that closed first
                    pipe.close()

        self._thread = threading.Thread(target=feed, name="age-decrypt", daemon=True)
        self._thread.start()

    def read(self, size: int = -1) -> bytes:
        data = self._plain.read(size)
        if not data and size != 0:
            self._thread.join()
            if self._failure:
                raise _cannot_decrypt(self._failure[0], self._shown)
        return data

    def close(self) -> None:
        self._plain.close()  # a thread still writing gets EPIPE and stops
        self._thread.join()
