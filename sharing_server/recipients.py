"""Recipient bearer tokens: issue, verify, revoke.

A token handed to a partner looks like ``<token id>.<secret>``. Only the token id,
a per-token salt and ``HMAC-SHA256(salt, secret)`` are stored, in
``<sharing root>/recipients.json``; a leaked state file therefore does not leak
access. The id makes verification a single lookup plus one constant-time compare.

Every change (issue, revoke) is a read-modify-write under an exclusive file lock,
written to a temporary file and renamed into place, so the CLI can issue tokens
while the server runs. The server notices the new file by its modification stamp
and re-reads it: no restart needed.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ggm_lakehouse import config as ggm_config

from sharing_server.shares_config import (
    DEFAULT_TOKEN_LIFETIME_DAYS,
    SharesConfig,
    load_shares_config,
)

STATE_FILE_NAME = "recipients.json"
AUDIT_FILE_NAME = "audit.jsonl"
DEFAULT_ENDPOINT = "http://127.0.0.1:8765/delta-sharing"
_STATE_FORMAT_VERSION = 1


class UnknownRecipientError(LookupError):
    """The recipient is not declared in the shares configuration."""


def default_state_path() -> Path:
    """``<sharing root>/recipients.json``."""
    return ggm_config.sharing_root() / STATE_FILE_NAME


def default_endpoint() -> str:
    """Public endpoint written into profiles: ``GGM_SHARING_ENDPOINT`` or the local default."""
    return os.environ.get("GGM_SHARING_ENDPOINT") or DEFAULT_ENDPOINT


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(ts: datetime) -> str:
    # Millisecond precision with 'Z': the shape of the protocol's profile example.
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _parse_iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _hash_secret(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """One issued token as stored (never the secret itself)."""

    token_id: str
    recipient: str
    salt: str
    secret_hash: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None = None

    def expires(self) -> datetime | None:
        return _parse_iso(self.expires_at)

    def is_active(self, at: datetime | None = None) -> bool:
        at = at or _now()
        if self.revoked_at is not None:
            return False
        expiry = self.expires()
        return expiry is None or at < expiry


class TokenStore:
    """The token state file of one sharing root."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_state_path()
        self._cache_lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, TokenRecord] = {}

    # -- reading -------------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _read_file(self) -> dict[str, TokenRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {r["token_id"]: TokenRecord(**r) for r in raw.get("tokens", [])}

    def records(self) -> dict[str, TokenRecord]:
        """All token records, re-read from disk when the file changed."""
        stamp = self._file_stamp()
        if stamp != self._stamp:
            with self._cache_lock:
                if stamp != self._stamp:
                    self._records = self._read_file()
                    self._stamp = stamp
        return self._records

    def authenticate(self, bearer_token: str) -> TokenRecord | None:
        """The active record for ``bearer_token``, or None if unknown, expired or revoked."""
        token_id, sep, secret = bearer_token.partition(".")
        if not sep or not token_id or not secret:
            return None
        record = self.records().get(token_id)
        if record is None:
            # Compare anyway so an unknown id costs as much time as a wrong secret.
            hmac.compare_digest(_hash_secret("00" * 16, secret), "0" * 64)
            return None
        if not hmac.compare_digest(_hash_secret(record.salt, secret), record.secret_hash):
            return None
        return record if record.is_active() else None

    def is_active(self, token_id: str) -> bool:
        """Whether the token with this id is still usable (for signed file URLs)."""
        record = self.records().get(token_id)
        return record is not None and record.is_active()

    # -- writing -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _write_file(self, records: dict[str, TokenRecord]) -> None:
        payload = {
            "format_version": _STATE_FORMAT_VERSION,
            "tokens": [asdict(r) for r in sorted(records.values(), key=lambda r: r.created_at)],
        }
        fd, tmp = tempfile.mkstemp(prefix=".recipients-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _audit(self, event: str, **fields: object) -> None:
        line = json.dumps({"at": _iso(_now()), "event": event, **fields})
        with open(self.path.parent / AUDIT_FILE_NAME, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def issue(self, recipient: str, lifetime: timedelta | None) -> tuple[str, TokenRecord]:
        """Create and store a new token; returns ``(bearer token, record)``."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        created = _now()
        record = TokenRecord(
            token_id=token_id,
            recipient=recipient,
            salt=salt,
            secret_hash=_hash_secret(salt, secret),
            created_at=_iso(created),
            expires_at=_iso(created + lifetime) if lifetime is not None else None,
        )
        with self._locked():
            records = self._read_file()
            records[token_id] = record
            self._write_file(records)
            self._audit("token_issued", recipient=recipient, token_id=token_id, expires_at=record.expires_at)
        return f"{token_id}.{secret}", record

    def revoke(self, recipient: str) -> int:
        """Revoke every active token of ``recipient``; returns how many were revoked."""
        revoked_at = _iso(_now())
        with self._locked():
            records = self._read_file()
            count = 0
            for token_id, record in list(records.items()):
                if record.recipient == recipient and record.revoked_at is None:
                    records[token_id] = TokenRecord(**{**asdict(record), "revoked_at": revoked_at})
                    count += 1
            if count:
                self._write_file(records)
            self._audit("tokens_revoked", recipient=recipient, count=count)
        return count


def issue_profile(
    recipient: str,
    endpoint: str | None = None,
    expires_days: int | None = None,
    *,
    config_path: Path | str | None = None,
    state_path: Path | str | None = None,
) -> dict:
    """Issue a new bearer token for ``recipient`` and return its Delta Sharing profile.

    The result is the profile file content of PROTOCOL.md "Profile File Format"::

        {"shareCredentialsVersion": 1, "endpoint": ..., "bearerToken": ..., "expirationTime": ...}

    ``endpoint`` defaults to ``GGM_SHARING_ENDPOINT`` or ``http://127.0.0.1:8765/delta-sharing``;
    ``expires_days`` to the recipient's ``token_lifetime_days`` or 90 days. Earlier tokens of
    the recipient stay valid until they expire or :func:`revoke` is called.

    Raises :class:`UnknownRecipientError` if the recipient is not in the shares configuration.
    """
    shares = load_shares_config(config_path)
    entry = shares.recipient(recipient)
    if entry is None:
        known = ", ".join(r.name for r in shares.recipients) or "none"
        raise UnknownRecipientError(
            f"unknown recipient {recipient!r}: declare it under 'recipients' in {shares.source} (known: {known})"
        )
    days = expires_days if expires_days is not None else (entry.token_lifetime_days or DEFAULT_TOKEN_LIFETIME_DAYS)
    if not isinstance(days, int) or days < 1:
        raise ValueError("expires_days must be a positive number of days")
    bearer_token, record = TokenStore(state_path).issue(recipient, timedelta(days=days))
    profile = {
        "shareCredentialsVersion": 1,
        "endpoint": (endpoint or default_endpoint()).rstrip("/"),
        "bearerToken": bearer_token,
    }
    if record.expires_at is not None:
        profile["expirationTime"] = record.expires_at
    return profile


def profile_json(recipient: str, endpoint: str | None = None, expires_days: int | None = None) -> str:
    """:func:`issue_profile` as indented JSON text, for ``ggm sharing profile RECIPIENT``."""
    return json.dumps(issue_profile(recipient, endpoint=endpoint, expires_days=expires_days), indent=2)


def revoke(
    recipient: str,
    *,
    config_path: Path | str | None = None,
    state_path: Path | str | None = None,
) -> int:
    """Revoke all tokens of ``recipient`` at once; returns the number revoked.

    The running server rejects them (401) from its next request on, and signed file
    URLs handed out under those tokens stop working as well. Works for recipients
    already removed from the configuration; raises :class:`UnknownRecipientError`
    only if the name is neither configured nor has ever held a token.
    """
    store = TokenStore(state_path)
    shares: SharesConfig | None
    try:
        shares = load_shares_config(config_path)
    except Exception:  # noqa: BLE001 - revocation must work even with a broken config
        shares = None
    known_in_config = shares is not None and shares.recipient(recipient) is not None
    if not known_in_config and not any(r.recipient == recipient for r in store.records().values()):
        raise UnknownRecipientError(f"unknown recipient {recipient!r}: no configuration entry and no tokens")
    return store.revoke(recipient)
