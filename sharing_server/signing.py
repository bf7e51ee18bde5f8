"""Signed, expiring file URLs: the server's own equivalent of cloud pre-signed URLs.

The protocol hands out file URLs that a client fetches without its bearer token
(PROTOCOL.md "File": "An https url that a client can use to read the file
directly"). Our files sit on a local or mounted lake, so the server serves them
itself under ``{prefix}/files/<opaque>``. The opaque part is
``base64url(JSON claims) "." base64url(HMAC-SHA256(key, claims))``; the claims name
the shared table and its Delta table id, the table version, the file's path as written in the Delta log,
the expiry and the token that obtained the URL. Nothing in the URL is trusted
before the signature checks out, and even then the path is only served if it is a
data file of that table version (see ``app.py``).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.secrets import MissingSecretError, get_secret

URL_KEY_SECRET_NAME = "ggm_sharing_url_key"
URL_KEY_FILE_NAME = "url_signing.key"

log = logging.getLogger(__name__)


class InvalidSignedUrl(ValueError):
    """The URL was not issued by this server, was altered, or has expired."""


@dataclass(frozen=True)
class FileClaims:
    """What a signed file URL grants: one file of one table version until ``expires_ms``."""

    share: str
    schema: str
    table: str
    table_id: str  # the Delta table id: a table re-created at the same place gets new URLs
    version: int
    path: str  # the add action's path, exactly as in the Delta log
    expires_ms: int
    token_id: str
    # Which action of the log names the file: "add" (active data file of ``version``),
    # or, for the change data feed, "cdf" / "remove" of the commit ``version``.
    kind: str = "add"

    def to_json(self) -> dict:
        claims = {
            "s": self.share,
            "c": self.schema,
            "t": self.table,
            "i": self.table_id,
            "v": self.version,
            "p": self.path,
            "e": self.expires_ms,
            "k": self.token_id,
        }
        if self.kind != "add":
            claims["a"] = self.kind
        return claims

    @staticmethod
    def from_json(raw: dict) -> "FileClaims":
        return FileClaims(
            share=str(raw["s"]),
            schema=str(raw["c"]),
            table=str(raw["t"]),
            table_id=str(raw["i"]),
            version=int(raw["v"]),
            path=str(raw["p"]),
            expires_ms=int(raw["e"]),
            token_id=str(raw["k"]),
            kind=str(raw.get("a", "add")),
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_url_key(state_dir: Path | str | None = None) -> bytes:
    """The signing key from secret ``ggm_sharing_url_key``, else one generated once and kept.

    Without a configured secret a random key is generated on first use and stored in
    ``<state_dir>/url_signing.key`` (default: the sharing root) with mode 0600, so file
    URLs survive a restart and are valid in every worker process that shares the state
    directory. A configured secret is still preferred (it can be rotated and backed up
    with the other secrets), hence the warning.
    """
    try:
        return get_secret(URL_KEY_SECRET_NAME).encode("utf-8")
    except MissingSecretError:
        path = Path(state_dir if state_dir is not None else ggm_config.sharing_root()) / URL_KEY_FILE_NAME
        log.warning(
            "secret %s is not configured; signing file URLs with the generated key in %s",
            URL_KEY_SECRET_NAME,
            path,
        )
        return _persisted_key(path)


def _persisted_key(path: Path) -> bytes:
    """The key in ``path``, created first (atomically, 0600) if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=".url-key-", dir=path.parent)
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)  # mkstemp creates the file 0600
        try:
            # link() fails if another process won the race; then its key is used.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    if path.stat().st_mode & 0o077:
        log.warning("narrowing the permissions of %s to 0600", path)
        os.chmod(path, 0o600)
    key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    if len(key) < 16:
        raise ValueError(f"{path} holds no usable signing key; delete it to generate a new one")
    return key


class UrlSigner:
    """Creates and verifies the opaque part of file URLs."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError(f"{URL_KEY_SECRET_NAME} must be at least 16 bytes long")
        # Derive a purpose-bound key so the configured secret is never used raw.
        self._key = hmac.new(key, b"ggm-delta-sharing-file-url-v1", hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def sign(self, claims: FileClaims) -> str:
        payload = json.dumps(claims.to_json(), separators=(",", ":"), sort_keys=True).encode("utf-8")
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, opaque: str, now_ms: int | None = None) -> FileClaims:
        """Return the claims of a genuine, unexpired URL or raise :class:`InvalidSignedUrl`."""
        encoded_payload, sep, encoded_mac = opaque.partition(".")
        if not sep or not encoded_payload or not encoded_mac:
            raise InvalidSignedUrl("malformed file URL")
        try:
            payload = _unb64(encoded_payload)
            mac = _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            raise InvalidSignedUrl("malformed file URL") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidSignedUrl("file URL signature does not match")
        try:
            claims = FileClaims.from_json(json.loads(payload))
        except (ValueError, KeyError, TypeError):
            raise InvalidSignedUrl("malformed file URL") from None
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        if now_ms >= claims.expires_ms:
            raise InvalidSignedUrl("file URL has expired")
        return claims
