"""Recipients and their bearer tokens: add, list, issue, rotate, verify, revoke.

Recipients come from two places, both read on every request:

* ``recipients:`` in ``config/shares.yaml`` - declared and reviewed by the operator;
* ``recipients`` in the state file ``<sharing root>/recipients.json`` - added by
  :func:`add_recipient` (the CLI), so the CLI never rewrites the commented YAML.

A name lives in one of the two; if both define it, shares.yaml wins.

A token handed to a partner looks like ``<token id>.<secret>``. Only the token id,
a per-token salt and ``HMAC-SHA256(salt, secret)`` are stored, in
``<sharing root>/recipients.json``; a leaked state file therefore does not leak
access. The id makes verification a single lookup plus one constant-time compare.

Every change (add, issue, revoke) is a read-modify-write under an exclusive file lock,
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
    InvalidNameError,
    Recipient,
    SharesConfig,
    load_shares_config,
    validate_name,
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


class RecipientExistsError(ValueError):
    """A recipient of that name already exists (in shares.yaml or the state file)."""


class UnknownShareError(ValueError):
    """A recipient was to be entitled to a share the configuration does not declare."""


@dataclass(frozen=True)
class StateRecipient:
    """A recipient added through :func:`add_recipient`, stored in the state file."""

    name: str
    shares: list[str]
    created_at: str
    token_lifetime_days: int | None = None
    comment: str | None = None

    def as_recipient(self, config: SharesConfig) -> Recipient:
        """The entitlement view; shares since removed from shares.yaml grant nothing."""
        known = {s.name.lower() for s in config.shares}
        return Recipient(
            name=self.name,
            shares=tuple(s.lower() for s in self.shares if s.lower() in known),
            token_lifetime_days=self.token_lifetime_days,
            comment=self.comment,
        )


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
        self._recipients: dict[str, StateRecipient] = {}

    # -- reading -------------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _read_state(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _read_file(self) -> dict[str, TokenRecord]:
        return {r["token_id"]: TokenRecord(**r) for r in self._read_state().get("tokens", [])}

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            with self._cache_lock:
                if stamp != self._stamp:
                    state = self._read_state()
                    self._records = {r["token_id"]: TokenRecord(**r) for r in state.get("tokens", [])}
                    self._recipients = {r["name"]: StateRecipient(**r) for r in state.get("recipients", [])}
                    self._stamp = stamp

    def records(self) -> dict[str, TokenRecord]:
        """All token records, re-read from disk when the file changed."""
        self._refresh()
        return self._records

    def recipients(self) -> dict[str, "StateRecipient"]:
        """Recipients added with :func:`add_recipient` (not those of shares.yaml), by name."""
        self._refresh()
        return self._recipients

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

    def _write_file(self, records: dict[str, TokenRecord], recipients: dict[str, "StateRecipient"] | None = None) -> None:
        """Replace the state file; ``recipients`` None keeps the stored recipients (call under the lock)."""
        if recipients is None:
            recipients = {r["name"]: StateRecipient(**r) for r in self._read_state().get("recipients", [])}
        payload = {
            "format_version": _STATE_FORMAT_VERSION,
            "recipients": [asdict(r) for r in sorted(recipients.values(), key=lambda r: r.name)],
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

    def add_recipient(self, entry: "StateRecipient") -> None:
        """Store a new recipient; raises :class:`RecipientExistsError` if the name is taken."""
        with self._locked():
            recipients = {r["name"]: StateRecipient(**r) for r in self._read_state().get("recipients", [])}
            if entry.name in recipients:
                raise RecipientExistsError(f"recipient {entry.name!r} already exists in {self.path}")
            recipients[entry.name] = entry
            self._write_file(self._read_file(), recipients)
            self._audit("recipient_added", recipient=entry.name, shares=list(entry.shares))

    def revoke(self, recipient: str, keep: frozenset[str] = frozenset()) -> int:
        """Revoke every active token of ``recipient`` except the ids in ``keep``; returns how many."""
        revoked_at = _iso(_now())
        with self._locked():
            records = self._read_file()
            count = 0
            for token_id, record in list(records.items()):
                if record.recipient == recipient and record.revoked_at is None and token_id not in keep:
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
    store = TokenStore(state_path)
    entry = find_recipient(shares, store, recipient)
    if entry is None:
        known = ", ".join(all_recipient_names(shares, store)) or "none"
        raise UnknownRecipientError(
            f"unknown recipient {recipient!r}: declare it under 'recipients' in {shares.source} "
            f"or add it with add_recipient (known: {known})"
        )
    return _issue(store, entry, endpoint, expires_days)[0]


def _issue(store: TokenStore, entry: Recipient, endpoint: str | None, expires_days: int | None) -> tuple[dict, TokenRecord]:
    days = expires_days if expires_days is not None else (entry.token_lifetime_days or DEFAULT_TOKEN_LIFETIME_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError("expires_days must be a positive number of days")
    bearer_token, record = store.issue(entry.name, timedelta(days=days))
    profile = {
        "shareCredentialsVersion": 1,
        "endpoint": (endpoint or default_endpoint()).rstrip("/"),
        "bearerToken": bearer_token,
    }
    if record.expires_at is not None:
        profile["expirationTime"] = record.expires_at
    return profile, record


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
    known_in_config = shares is not None and find_recipient(shares, store, recipient) is not None
    if not known_in_config and not any(r.recipient == recipient for r in store.records().values()):
        raise UnknownRecipientError(f"unknown recipient {recipient!r}: no configuration entry and no tokens")
    return store.revoke(recipient)


# --------------------------------------------------------------------------- recipient management
def find_recipient(config: SharesConfig, store: TokenStore, name: str) -> Recipient | None:
    """The recipient ``name`` from shares.yaml, else from the state file, else None.

    shares.yaml wins: an operator's declaration there overrides an entry made by the CLI.
    """
    declared = config.recipient(name)
    if declared is not None:
        return declared
    added = store.recipients().get(name)
    return added.as_recipient(config) if added is not None else None


def all_recipient_names(config: SharesConfig, store: TokenStore) -> list[str]:
    """Names of all recipients: shares.yaml first (in file order), then the state file's (sorted)."""
    names = [r.name for r in config.recipients]
    names += [n for n in sorted(store.recipients()) if config.recipient(n) is None]
    return names


def add_recipient(
    name: str,
    shares: list[str] | tuple[str, ...],
    expires_days: int | None = None,
    *,
    endpoint: str | None = None,
    comment: str | None = None,
    config_path: Path | str | None = None,
    state_path: Path | str | None = None,
) -> dict:
    """Add a recipient entitled to ``shares`` and issue its first profile (``ggm sharing add-recipient``).

    The recipient is stored in the state file (``<sharing root>/recipients.json``), not in
    shares.yaml: the YAML stays the operator's reviewed, commented document, while the CLI
    changes machine-managed state under a file lock. Both sources are read by the server
    and by every function here; a name may exist in only one of them.

    ``expires_days`` is the lifetime of this and later tokens of the recipient (default
    90 days). Returns ``{"name", "shares", "profile"}`` where ``profile`` is the Delta
    Sharing profile file content to hand over to the partner.

    Raises :class:`RecipientExistsError`, :class:`UnknownShareError`, or ``ValueError``
    for an invalid name or lifetime.
    """
    try:
        validate_name(name, "recipient")
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None
    if expires_days is not None and (isinstance(expires_days, bool) or not isinstance(expires_days, int) or expires_days < 1):
        raise ValueError("expires_days must be a positive number of days")
    config = load_shares_config(config_path)
    store = TokenStore(state_path)
    if config.recipient(name) is not None:
        raise RecipientExistsError(f"recipient {name!r} is already declared in {config.source}")
    if not shares:
        raise UnknownShareError("a recipient needs at least one share")
    entitled: list[str] = []
    for share_name in shares:
        share = config.share(share_name)
        if share is None:
            known = ", ".join(s.name for s in config.shares) or "none"
            raise UnknownShareError(f"unknown share {share_name!r} (known: {known})")
        if share.name not in entitled:
            entitled.append(share.name)
    entry = StateRecipient(
        name=name, shares=entitled, created_at=_iso(_now()), token_lifetime_days=expires_days, comment=comment
    )
    store.add_recipient(entry)
    profile, _ = _issue(store, entry.as_recipient(config), endpoint, expires_days)
    return {"name": name, "shares": entitled, "profile": profile}


def list_recipients(*, config_path: Path | str | None = None, state_path: Path | str | None = None) -> list[dict]:
    """All recipients with their entitlements and token status, never token values.

    Each item: ``name``, ``shares`` (share names), ``source`` (``shares.yaml`` or
    ``state``), ``active_tokens`` (unexpired, unrevoked) and ``earliest_expiry`` (ISO 8601
    of the active token expiring first, or None).
    """
    config = load_shares_config(config_path)
    store = TokenStore(state_path)
    share_names = {s.name.lower(): s.name for s in config.shares}
    now = _now()
    result = []
    for name in all_recipient_names(config, store):
        recipient = find_recipient(config, store, name)
        active = [r for r in store.records().values() if r.recipient == name and r.is_active(now)]
        expiries = [r.expires() for r in active if r.expires() is not None]
        result.append(
            {
                "name": name,
                "shares": [share_names.get(s, s) for s in recipient.shares],
                "source": "shares.yaml" if config.recipient(name) is not None else "state",
                "active_tokens": len(active),
                "earliest_expiry": _iso(min(expiries)) if expiries else None,
            }
        )
    return result


def rotate(
    name: str,
    *,
    endpoint: str | None = None,
    expires_days: int | None = None,
    config_path: Path | str | None = None,
    state_path: Path | str | None = None,
) -> dict:
    """Issue a fresh profile for ``name`` and revoke all its other tokens (``ggm sharing rotate``).

    The new token is stored before the old ones are revoked, so there is no moment
    without a valid token. Returns ``{"name", "profile", "revoked_tokens"}``.
    Raises :class:`UnknownRecipientError` for an unknown recipient.
    """
    config = load_shares_config(config_path)
    store = TokenStore(state_path)
    entry = find_recipient(config, store, name)
    if entry is None:
        raise UnknownRecipientError(f"unknown recipient {name!r}")
    profile, record = _issue(store, entry, endpoint, expires_days)
    revoked = store.revoke(name, keep=frozenset({record.token_id}))
    return {"name": name, "profile": profile, "revoked_tokens": revoked}
