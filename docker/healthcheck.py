"""Container health probe for the compose stack, standard library only.

    python healthcheck.py URL [--status CODE] [--contains TEXT]

Exits 0 when ``URL`` answers with HTTP status ``CODE`` (default 200) and, if given,
a body containing ``TEXT``; exits 1 otherwise. An expected non-200 status is how a
protected endpoint proves the application, not just the port, is up: the Delta
Sharing server answers 401 ``UNAUTHENTICATED`` to a request without a bearer token.
"""
from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 5.0


def probe(url: str, expected_status: int, expected_text: str | None) -> str | None:
    """Return None when ``url`` is healthy, else the reason it is not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status, body = response.status, response.read(65536)
    except urllib.error.HTTPError as error:  # 4xx/5xx still carry a status and body
        status, body = error.code, error.read(65536)
    except (urllib.error.URLError, OSError) as error:
        return f"{url}: {error}"
    if status != expected_status:
        return f"{url}: HTTP {status}, expected {expected_status}"
    if expected_text is not None and expected_text not in body.decode("utf-8", "replace"):
        return f"{url}: response does not contain {expected_text!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--status", type=int, default=200, help="expected HTTP status (default 200)")
    parser.add_argument("--contains", default=None, help="text the response body must contain")
    args = parser.parse_args(argv)
    problem = probe(args.url, args.status, args.contains)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
