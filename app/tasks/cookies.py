"""Cookies a client sends with a task: checked as a Netscape cookies.txt, kept encrypted at rest,
decrypted only to hand them to the task's worker.

The store holds only what `CookieSealer.seal` returns (AES-256-GCM, the task id as associated data,
so sealed cookies moved to another task do not open). Responses, events, callbacks, logs and
metrics never see the text: a task records only whether it has cookies.
"""

import contextlib
import hashlib
import hmac
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

NETSCAPE_HEADER = "# Netscape HTTP Cookie File"
_FIELDS = "domain, include-subdomains, path, secure, expiry, name, value"
_BOOLEAN = frozenset({"TRUE", "FALSE"})
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NONCE_BYTES = 12
_KEY_CONTEXT = b"video-api cookies at rest v1"


class CookiesError(ValueError):
    """The cookies text is not a Netscape cookies.txt; the message names the line, never its content."""


def checked_text(text: str) -> str:
    """The cookies as a cookies.txt yt-dlp loads (with its header line), or CookiesError."""
    cookies = 0
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if line.startswith("#HttpOnly_"):
            line = line.removeprefix("#HttpOnly_")
        elif not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        problem = None
        if len(fields) != 7:
            problem = f"has {len(fields)} tab-separated fields, not 7 ({_FIELDS})"
        elif fields[1] not in _BOOLEAN or fields[3] not in _BOOLEAN:
            problem = "has include-subdomains or secure other than TRUE or FALSE"
        elif fields[4] and not (fields[4].isascii() and fields[4].isdigit()):
            problem = "has an expiry that is not a number of seconds"
        elif not fields[0] or not fields[5] or _CONTROL.search(line):
            problem = "has no domain, no name, or a control character"
        if problem:
            raise CookiesError(f"cookies line {number} {problem}")
        cookies += 1
    if not cookies:
        raise CookiesError("cookies holds no cookie line (Netscape cookies.txt: one cookie a line)")
    body = text if text.startswith(("# HTTP Cookie File", NETSCAPE_HEADER)) else f"{NETSCAPE_HEADER}\n{text}"
    return body if body.endswith("\n") else body + "\n"


class CookieSealer:
    """Encrypts a task's cookies for the store and decrypts them for its download. Every host of a
    fleet derives the same key from the same secret (VIDEO_API_COOKIE_SECRET)."""

    def __init__(self, secret: str) -> None:
        # Imported here: a service without a cookie secret, and the download host (it gets the
        # cookies opened), never load cryptography (~2 MB a process).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = hmac.new(secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, task_id: str, text: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, text.encode(), task_id.encode())

    def open(self, task_id: str, sealed: bytes) -> str:
        """The cookies text; CookiesError when the secret differs from the one that sealed it."""
        from cryptography.exceptions import InvalidTag  # loaded with AESGCM in __init__

        try:
            plain = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], task_id.encode())
        except InvalidTag:
            raise CookiesError("the task's cookies do not open with this host's VIDEO_API_COOKIE_SECRET") from None
        return plain.decode()


def cookie_folder(task_id: str) -> Path:
    """The private folder of a task's cookie file, in the service's temporary folder (its own,
    with systemd's PrivateTmp): the worker makes it, the service removes it however the worker ended."""
    return Path(tempfile.gettempdir()) / f"video-api-cookies-{task_id}"


@contextlib.contextmanager
def cookie_file(task_id: str, text: str | None) -> Iterator[Path | None]:
    """A 0600 cookies.txt of text for yt-dlp, which reads it and writes it back: one per run,
    never shared; removed on the way out."""
    if text is None:
        yield None
        return
    folder = cookie_folder(task_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    path = folder / "cookies.txt"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
