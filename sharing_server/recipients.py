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

Tokens are bound to a *recipient id*, not only to a name: every recipient gets a random
id the first time it is seen, and when it leaves the configuration the id is retired for
good and all its tokens are revoked (:meth:`TokenStore.reconcile`, run by the server on
every configuration change and by every function here). A new recipient that later
reuses the name gets a new id, so a removed partner's old token never comes back.

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
import uuid
from typing import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.landing import fsync_dir
from ggm_lakehouse.model.shares_config import (
    InvalidNameError,
    Recipient,
    SharesConfig,
    load_shares_config,
    parse_lifetime,
    validate_name,
)


STATE_FILE_NAME = "recipients.json"
AUDIT_FILE_NAME = "audit.jsonl"
DEFAULT_ENDPOINT = "http://127.0.0.1:8765/delta-sharing"
_STATE_FORMAT_VERSION = 2
#: The token event log rolls over at this size, keeping this many old files (.1 newest).
AUDIT_MAX_BYTES = 10 * 1024 * 1024
AUDIT_BACKUPS = 5


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


def append_private(path: Path, line: str) -> None:
    """Append one line to ``path``, creating it readable by the owner only (0600).

    An existing file with wider permissions is narrowed: audit trails name partners and
    token ids, which is nobody else's business on a shared host.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _rotate(path: Path, max_bytes: int = AUDIT_MAX_BYTES, backups: int = AUDIT_BACKUPS) -> None:
    """Roll ``path`` over to ``path.1`` (``.1`` .. ``.N``, oldest dropped) once it reaches ``max_bytes``."""
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


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
    token_lifetime: str | None = None  # finer default lifetime ("30m", "12h"), wins over days

    def as_recipient(self, config: SharesConfig) -> Recipient:
        """The entitlement view; shares since removed from shares.yaml grant nothing."""
        known = {s.name.lower() for s in config.shares}
        return Recipient(
            name=self.name,
            shares=tuple(s.lower() for s in self.shares if s.lower() in known),
            token_lifetime_days=self.token_lifetime_days,
            comment=self.comment,
            token_lifetime=self.token_lifetime,
        )


@dataclass(frozen=True)
class RecipientIdentity:
    """One incarnation of a recipient name; ``retired_at`` set once it left the configuration."""

    name: str
    id: str
    created_at: str
    retired_at: str | None = None
    # Generation of the recipient's pseudonym key (sharing_server.projections.recipient_key): raised by
    # rotate_pseudonym_key, and a recipient re-added under an old name starts above the old incarnation's.
    key_generation: int = 1


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
    recipient_id: str | None = None  # the incarnation of ``recipient`` the token was issued to

    def expires(self) -> datetime | None:
        return _parse_iso(self.expires_at)

    def is_active(self, at: datetime | None = None) -> bool:
        at = at or _now()
        if self.revoked_at is not None:
            return False
        expiry = self.expires()
        return expiry is None or at < expiry


@dataclass
class _State:
    """The parsed state file."""

    tokens: dict[str, TokenRecord]
    recipients: dict[str, StateRecipient]
    identities: list[RecipientIdentity]

    def live_ids(self) -> dict[str, str]:
        return {i.name: i.id for i in self.identities if i.retired_at is None}


def _parse_state(raw: dict) -> _State:
    return _State(
        tokens={r["token_id"]: TokenRecord(**r) for r in raw.get("tokens", [])},
        recipients={r["name"]: StateRecipient(**r) for r in raw.get("recipients", [])},
        identities=[RecipientIdentity(**r) for r in raw.get("recipient_ids", [])],
    )


class TokenStore:
    """The token state file of one sharing root."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_state_path()
        self._cache_lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._state = _State({}, {}, [])
        self._live: dict[str, str] = {}

    # -- reading -------------------------------------------------------------
    def _read_state(self) -> _State:
        try:
            return _parse_state(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return _State({}, {}, [])

    def _refresh(self) -> None:
        stamp = ggm_config.file_stamp(self.path)
        if stamp != self._stamp:
            with self._cache_lock:
                if stamp != self._stamp:
                    self._state = self._read_state()
                    self._live = self._state.live_ids()
                    self._stamp = stamp

    def records(self) -> dict[str, TokenRecord]:
        """All token records, re-read from disk when the file changed."""
        self._refresh()
        return self._state.tokens

    def recipients(self) -> dict[str, "StateRecipient"]:
        """Recipients added with :func:`add_recipient` (not those of shares.yaml), by name."""
        self._refresh()
        return self._state.recipients

    def recipient_id(self, name: str) -> str | None:
        """The live id of recipient ``name``, or None if it has none (never seen, or retired)."""
        self._refresh()
        return self._live.get(name)

    def _bound(self, record: TokenRecord) -> bool:
        # A token only counts for the incarnation of the name it was issued to.
        return record.recipient_id is not None and self._live.get(record.recipient) == record.recipient_id

    def authenticate(self, bearer_token: str) -> TokenRecord | None:
        """The active record for ``bearer_token``, or None if unknown, expired, revoked or unbound."""
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
        return record if record.is_active() and self._bound(record) else None

    def is_active(self, token_id: str) -> bool:
        """Whether the token with this id is still usable (for signed file URLs)."""
        record = self.records().get(token_id)
        return record is not None and record.is_active() and self._bound(record)

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

    def _write_state(self, state: _State) -> None:
        """Replace the state file (call under the lock)."""
        payload = {
            "format_version": _STATE_FORMAT_VERSION,
            "recipients": [asdict(r) for r in sorted(state.recipients.values(), key=lambda r: r.name)],
            "recipient_ids": [asdict(i) for i in state.identities],
            "tokens": [asdict(r) for r in sorted(state.tokens.values(), key=lambda r: r.created_at)],
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
        # The rename itself must survive a power loss, or a revocation could come undone.
        fsync_dir(self.path.parent)

    def _audit(self, event: str, **fields: object) -> None:
        # Called under the state lock, so rotation cannot race another writer.
        path = self.path.parent / AUDIT_FILE_NAME
        _rotate(path)
        append_private(path, json.dumps({"at": _iso(_now()), "event": event, **fields}) + "\n")

    def key_generation(self, name: str) -> int:
        """The pseudonym key generation of the live incarnation of ``name`` (1 when it has none yet)."""
        self._refresh()
        live = self._live.get(name)
        return next((i.key_generation for i in self._state.identities if i.id == live), 1)

    def rotate_pseudonym_key(self, name: str) -> int:
        """Raise the pseudonym key generation of ``name``'s live incarnation; returns the new generation."""
        with self._locked():
            state = self._read_state()
            live = self._ensure_identity(state, name)
            index = next(i for i, identity in enumerate(state.identities) if identity.id == live)
            generation = state.identities[index].key_generation + 1
            state.identities[index] = replace(state.identities[index], key_generation=generation)
            self._write_state(state)
            self._audit("pseudonym_key_rotated", recipient=name, recipient_id=live, key_generation=generation)
        return generation

    @staticmethod
    def _ensure_identity(state: _State, name: str) -> str:
        live = state.live_ids().get(name)
        if live is not None:
            return live
        # A new incarnation of a name never gets the pseudonyms an earlier one was given.
        earlier = max((i.key_generation for i in state.identities if i.name == name), default=0)
        identity = RecipientIdentity(name=name, id=uuid.uuid4().hex, created_at=_iso(_now()), key_generation=earlier + 1)
        state.identities.append(identity)
        return identity.id

    def issue(self, recipient: str, lifetime: timedelta | None) -> tuple[str, TokenRecord]:
        """Create and store a new token for the live incarnation of ``recipient``; returns ``(bearer token, record)``."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        created = _now()
        with self._locked():
            state = self._read_state()
            record = TokenRecord(
                token_id=token_id,
                recipient=recipient,
                salt=salt,
                secret_hash=_hash_secret(salt, secret),
                created_at=_iso(created),
                expires_at=_iso(created + lifetime) if lifetime is not None else None,
                recipient_id=self._ensure_identity(state, recipient),
            )
            state.tokens[token_id] = record
            self._write_state(state)
            self._audit("token_issued", recipient=recipient, token_id=token_id, expires_at=record.expires_at)
        return f"{token_id}.{secret}", record

    def add_recipient(self, entry: "StateRecipient") -> None:
        """Store a new recipient; raises :class:`RecipientExistsError` if the name is taken."""
        with self._locked():
            state = self._read_state()
            if entry.name in state.recipients:
                raise RecipientExistsError(f"recipient {entry.name!r} already exists in {self.path}")
            state.recipients[entry.name] = entry
            self._ensure_identity(state, entry.name)
            self._write_state(state)
            self._audit("recipient_added", recipient=entry.name, shares=list(entry.shares))

    def revoke(self, recipient: str, keep: frozenset[str] = frozenset()) -> int:
        """Revoke every active token of ``recipient`` except the ids in ``keep``; returns how many."""
        with self._locked():
            state = self._read_state()
            count = _revoke_where(state, lambda r: r.recipient == recipient and r.token_id not in keep)
            if count:
                self._write_state(state)
            self._audit("tokens_revoked", recipient=recipient, count=count)
        return count

    def reconcile(self, names: Iterable[str]) -> list[str]:
        """Align recipient ids with the recipients now configured (``names``); returns the retired names.

        A name that is no longer configured has its id retired for good and every token
        of it revoked. A configured name without a live id gets a fresh one; tokens of
        that name issued before ids existed (state format 1) are adopted by it.
        """
        wanted = set(names) | set(self.recipients())
        live = self._live if self._stamp == ggm_config.file_stamp(self.path) else self._read_state().live_ids()
        if set(live) == wanted:
            return []  # the common case: nothing to write, no lock taken
        with self._locked():
            state = self._read_state()
            retired = self._retire_absent(state, wanted)
            for name in sorted(wanted - set(state.live_ids())):
                new_id = self._ensure_identity(state, name)
                for token_id, record in list(state.tokens.items()):
                    if record.recipient == name and record.recipient_id is None and record.revoked_at is None:
                        state.tokens[token_id] = TokenRecord(**{**asdict(record), "recipient_id": new_id})
            self._write_state(state)
            for name in retired:
                self._audit("recipient_retired", recipient=name)
        return retired

    def _retire_absent(self, state: _State, wanted: set[str]) -> list[str]:
        now = _iso(_now())
        retired = []
        for index, identity in enumerate(state.identities):
            if identity.retired_at is None and identity.name not in wanted:
                state.identities[index] = RecipientIdentity(**{**asdict(identity), "retired_at": now})
                _revoke_where(state, lambda r, i=identity: r.recipient == i.name)
                retired.append(identity.name)
        return retired


def _revoke_where(state: _State, predicate) -> int:
    """Mark the unrevoked tokens matching ``predicate`` revoked (in ``state``); returns how many."""
    revoked_at = _iso(_now())
    count = 0
    for token_id, record in list(state.tokens.items()):
        if record.revoked_at is None and predicate(record):
            state.tokens[token_id] = TokenRecord(**{**asdict(record), "revoked_at": revoked_at})
            count += 1
    return count


def reconciled_store(config: SharesConfig, state_path: Path | str | None = None) -> TokenStore:
    """The token store of ``state_path`` with recipient ids aligned to ``config`` (see :meth:`TokenStore.reconcile`)."""
    store = TokenStore(state_path)
    if not config.fail_closed:
        store.reconcile(r.name for r in config.recipients)
    return store


def _load(config_path: Path | str | None, state_path: Path | str | None) -> tuple[SharesConfig, TokenStore]:
    """The configuration and its token store, recipient ids reconciled first.

    Every entry point does this, so a recipient removed from shares.yaml is retired (and
    its tokens revoked) by whichever runs first, the server or a ``ggm sharing`` command.
    """
    config = load_shares_config(config_path)
    return config, reconciled_store(config, state_path)


def issue_profile(
    recipient: str,
    endpoint: str | None = None,
    expires_days: int | str | timedelta | None = None,
    *,
    config_path: Path | str | None = None,
    state_path: Path | str | None = None,
) -> dict:
    """Issue a new bearer token for ``recipient`` and return its Delta Sharing profile.

    The result is the profile file content of PROTOCOL.md "Profile File Format"::

        {"shareCredentialsVersion": 1, "endpoint": ..., "bearerToken": ..., "expirationTime": ...}

    ``endpoint`` defaults to ``GGM_SHARING_ENDPOINT`` or ``http://127.0.0.1:8765/delta-sharing``;
    ``expires_days`` is the token lifetime: whole days (int) or text such as ``30m``, ``12h``,
    ``7d`` (:func:`~ggm_lakehouse.model.shares_config.parse_lifetime`); default the recipient's own
    lifetime or 90 days. Earlier tokens of the recipient stay valid until they expire or
    :func:`revoke` is called.

    Raises :class:`UnknownRecipientError` if the recipient is not in the shares configuration.
    """
    shares, store = _load(config_path, state_path)
    entry = find_recipient(shares, store, recipient)
    if entry is None:
        known = ", ".join(all_recipient_names(shares, store)) or "none"
        raise UnknownRecipientError(
            f"unknown recipient {recipient!r}: declare it under 'recipients' in {shares.source} "
            f"or add it with add_recipient (known: {known})"
        )
    return _issue(store, entry, endpoint, expires_days)[0]


def _issue(store: TokenStore, entry: Recipient, endpoint: str | None, lifetime: int | str | timedelta | None) -> tuple[dict, TokenRecord]:
    duration = parse_lifetime(lifetime) if lifetime is not None else entry.default_token_lifetime()
    bearer_token, record = store.issue(entry.name, duration)
    profile = {
        "shareCredentialsVersion": 1,
        "endpoint": (endpoint or default_endpoint()).rstrip("/"),
        "bearerToken": bearer_token,
    }
    if record.expires_at is not None:
        profile["expirationTime"] = record.expires_at
    return profile, record


def profile_json(recipient: str, endpoint: str | None = None, expires_days: int | str | timedelta | None = None) -> str:
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
    A configuration that failed closed (unreadable file) admits nobody.
    """
    if config.fail_closed:
        return None
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


def _entitled_shares(config: SharesConfig, shares: list[str] | tuple[str, ...]) -> list[str]:
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
    return entitled


def add_recipient(
    name: str,
    shares: list[str] | tuple[str, ...],
    expires_days: int | str | timedelta | None = None,
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

    ``expires_days`` is the lifetime of this and later tokens of the recipient: whole days
    (int) or text such as ``30m``, ``12h``, ``7d`` (default 90 days). Returns ``{"name",
    "shares", "profile"}`` where ``profile`` is the Delta Sharing profile file content to
    hand over to the partner.

    Raises :class:`RecipientExistsError`, :class:`UnknownShareError`, or ``ValueError``
    for an invalid name or lifetime.
    """
    try:
        validate_name(name, "recipient")
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None
    lifetime = parse_lifetime(expires_days) if expires_days is not None else None
    config, store = _load(config_path, state_path)
    if config.recipient(name) is not None:
        raise RecipientExistsError(f"recipient {name!r} is already declared in {config.source}")
    entitled = _entitled_shares(config, shares)
    whole_days = isinstance(expires_days, int) and not isinstance(expires_days, bool)
    entry = StateRecipient(
        name=name, shares=entitled, created_at=_iso(_now()), comment=comment,
        token_lifetime_days=expires_days if whole_days else None,
        token_lifetime=None if whole_days or lifetime is None else f"{int(lifetime.total_seconds() // 60)}m",
    )
    store.add_recipient(entry)
    profile, _ = _issue(store, entry.as_recipient(config), endpoint, lifetime)
    return {"name": name, "shares": entitled, "profile": profile}


def list_recipients(*, config_path: Path | str | None = None, state_path: Path | str | None = None) -> list[dict]:
    """All recipients with their entitlements and token status, never token values.

    Each item: ``name``, ``shares`` (share names), ``source`` (``shares.yaml`` or
    ``state``), ``recipient_id`` (the id its tokens are bound to), ``active_tokens``
    (unexpired, unrevoked), ``earliest_expiry`` (ISO 8601 of the active token expiring
    first, or None), ``key_generation`` (of its pseudonym key) and ``tokens``: every live token
    as ``{"token_id", "created_at", "expires_at"}`` (oldest first), so an operator can see what is out there.
    """
    config, store = _load(config_path, state_path)
    share_names = {s.name.lower(): s.name for s in config.shares}
    now = _now()
    result = []
    for name in all_recipient_names(config, store):
        recipient = find_recipient(config, store, name)
        live_id = store.recipient_id(name)
        active = sorted(
            (r for r in store.records().values() if r.recipient == name and r.recipient_id == live_id and r.is_active(now)),
            key=lambda r: r.created_at,
        )
        expiries = [r.expires() for r in active if r.expires() is not None]
        result.append(
            {
                "name": name,
                "shares": [share_names.get(s, s) for s in recipient.shares] if recipient else [],
                "source": "shares.yaml" if config.recipient(name) is not None else "state",
                "recipient_id": live_id,
                "active_tokens": len(active),
                "earliest_expiry": _iso(min(expiries)) if expiries else None,
                "key_generation": store.key_generation(name),
                "tokens": [{"token_id": r.token_id, "created_at": r.created_at, "expires_at": r.expires_at} for r in active],
            }
        )
    return result


def rotate_pseudonym_key(
    name: str, *, config_path: Path | str | None = None, state_path: Path | str | None = None
) -> tuple[Recipient, int]:
    """Give ``name`` a new pseudonym key (``ggm sharing recipient rotate-key``); returns its entitlement and new generation.

    Only this recipient's key changes: its next projections carry new pseudonyms (consistent across
    all its tables, so its own joins keep working), other recipients keep theirs. The caller
    rebuilds the projections (:func:`sharing_server.projections.materialise_recipient_tables`).
    Raises :class:`UnknownRecipientError` for an unknown recipient.
    """
    config, store = _load(config_path, state_path)
    recipient = find_recipient(config, store, name)
    if recipient is None:
        raise UnknownRecipientError(f"unknown recipient {name!r}")
    return recipient, store.rotate_pseudonym_key(name)


def rotate(
    name: str,
    *,
    endpoint: str | None = None,
    expires_days: int | str | timedelta | None = None,
    config_path: Path | str | None = None,
    state_path: Path | str | None = None,
) -> dict:
    """Issue a fresh profile for ``name`` and revoke all its other tokens (``ggm sharing rotate``).

    The new token is stored before the old ones are revoked, so there is no moment
    without a valid token. Returns ``{"name", "profile", "revoked_tokens"}``.
    Raises :class:`UnknownRecipientError` for an unknown recipient.
    """
    config, store = _load(config_path, state_path)
    entry = find_recipient(config, store, name)
    if entry is None:
        raise UnknownRecipientError(f"unknown recipient {name!r}")
    profile, record = _issue(store, entry, endpoint, expires_days)
    revoked = store.revoke(name, keep=frozenset({record.token_id}))
    return {"name": name, "profile": profile, "revoked_tokens": revoked}
