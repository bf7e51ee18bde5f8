"""Keyed pseudonyms for BSNs (AVG/GDPR).

A BSN is replaced by ``HMAC-SHA256(key, context || bsn)`` in hex. The key is a
secret (env ``GGM_PSEUDONYM_KEY`` or Airflow connection ``ggm_pseudonym_key``);
without the key a pseudonym cannot be reversed or recomputed by brute force over
the small BSN space. ``context`` separates domains: the municipality's internal
pseudonyms use context ``"internal"``, each sharing recipient gets its own
context and key, so two partners cannot join their data on a common value.
"""
from __future__ import annotations

import hashlib
import hmac

from ggm_lakehouse.secrets import get_secret

PSEUDONYM_KEY_SECRET = "ggm_pseudonym_key"
INTERNAL_CONTEXT = "internal"
MIN_KEY_LENGTH = 16


def load_key(secret_name: str = PSEUDONYM_KEY_SECRET) -> bytes:
    """Fetch the pseudonymisation key from the configured secret store."""
    key = get_secret(secret_name).encode("utf-8")
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"pseudonymisation key {secret_name!r} is shorter than {MIN_KEY_LENGTH} bytes; use a long random secret"
        )
    return key


def pseudonymise(bsn: str | None, key: bytes, context: str = INTERNAL_CONTEXT) -> str | None:
    """Return the hex HMAC pseudonym of ``bsn`` in ``context``; None stays None."""
    if bsn is None:
        return None
    message = f"{context}\x1f{bsn}".encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()
