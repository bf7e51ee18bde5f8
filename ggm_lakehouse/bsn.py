"""The burgerservicenummer (BSN) and its elfproef.

A BSN is nine digits d1..d9 for which 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 is a
multiple of 11 (and not all zeros). The same rule is used by the demo generator
to create valid numbers and by the silver data-quality rules to reject bad ones.
"""
from __future__ import annotations

_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def elfproef_sum(digits: str) -> int:
    """Weighted sum of the elfproef for a nine-digit string."""
    return sum(int(d) * w for d, w in zip(digits, _WEIGHTS))


def is_valid_bsn(value: object) -> bool:
    """True when ``value`` is a nine-digit string that passes the elfproef."""
    if not isinstance(value, str) or len(value) != 9 or not value.isdigit():
        return False
    if value == "000000000":
        return False
    return elfproef_sum(value) % 11 == 0


def complete_bsn(first_eight: str) -> str | None:
    """Append the check digit that makes ``first_eight`` a valid BSN, or None if no digit fits."""
    if len(first_eight) != 8 or not first_eight.isdigit():
        raise ValueError(f"expected eight digits, got {first_eight!r}")
    partial = elfproef_sum(first_eight + "0")
    check = partial % 11  # need partial - check ≡ 0 (mod 11)
    if check > 9:
        return None
    candidate = first_eight + str(check)
    return candidate if is_valid_bsn(candidate) else None
