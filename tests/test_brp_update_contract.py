"""Contract tests: every kind of BRP Update API stand-in response, validated with openapi-core.

The stand-in (``standins.brp_update``) is started on 127.0.0.1 and called over real HTTP
with ``requests``; each request/response pair is wrapped with
``openapi_core.contrib.requests`` and the RESPONSE is validated against the operation
the spec resolves for that URL (status, media type, declared headers and body).

Spec: ``specs/brp-update-api/specificatie_genereervariant_openapi.yaml`` of the reference material
(``GGM_SPECS_DIR``, see tests/specs.py; the module skips without it)
(BRP Update API 1.0.0, the *genereervariant*: the same API as ``specificatie/openapi.yaml``
with the Haal Centraal common components inlined). The plain ``openapi.yaml`` cannot be
used offline: its errors, headers and HalLink are remote ``$ref``s to
raw.githubusercontent.com. Read at test time, never copied into the project; the spec's
``servers`` entry is replaced by the stand-in's base URL.

Documented deviations of the spec copy, handled explicitly instead of weakened silently:

* 429 (rate limiting) is not declared by any operation: it validates against the
  operation's ``default`` response (``Foutbericht``), which is what the spec prescribes
  for undeclared statuses.
* the API has no DELETE (a volgindicatie ends with an einddatum); the stand-in answers
  405. openapi-core cannot validate a response of an operation the spec lacks, so the
  405 body is validated directly against the spec's ``Foutbericht`` schema.
* ``GET /wijzigingen`` declares its ``vanaf`` parameter with ``format: date`` but no
  ``type`` in the genereervariant (the source ``openapi.yaml`` has ``type: string``);
  only responses are validated here, so this does not affect the cases.
* the source ``openapi.yaml`` (not the genereervariant) declares ``vanaf`` with
  ``explode: false`` on a primitive query parameter, which is meaningless but harmless.
"""
from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from typing import Any

import pytest
import requests

from demo_gemeente.generator import DemoWorld
from standins.brp_update import start_brp_update_standin
from tests.openapi_contract import load_spec, response_errors, spec_validator
from tests.specs import SHARED, available, missing_reason

SPEC_RELATIVE = "specs/brp-update-api/specificatie_genereervariant_openapi.yaml"
SPEC = SHARED / SPEC_RELATIVE
TIMEOUT = 10
KEY = "afnemer-1"
# Three moves happen on this day in the demo municipality (population 300, seed 5).
CHANGE_DAY = date(2026, 6, 9)

pytestmark = pytest.mark.skipif(not available(SPEC_RELATIVE), reason=missing_reason(SPEC_RELATIVE))


def contract_errors(base_url: str, response: requests.Response) -> list[str]:
    """Every violation of the spec by ``response``, as text."""
    return response_errors(spec_validator(SPEC, base_url), response)


def assert_conforms(base_url: str, response: requests.Response) -> None:
    errors = contract_errors(base_url, response)
    assert errors == [], (f"{response.request.method} {response.request.url} -> {response.status_code} violates "
                          f"{SPEC.name}:\n" + "\n".join(errors) + f"\nbody: {response.text[:800]}")
    assert response.headers["api-version"] == "1.0.0"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(300, 5)


@pytest.fixture(scope="module")
def movers(world) -> list[str]:
    found = sorted({c.subject for c in world.at(CHANGE_DAY).changes_on(CHANGE_DAY) if c.kind == "move"})
    assert found, "the demo municipality must have moves on the change day"
    return found


@pytest.fixture(scope="module")
def standin(world, movers):
    """Volgindicaties on the movers placed the day before; the clock then moves to the change day."""
    with start_brp_update_standin(world, as_of=CHANGE_DAY - timedelta(days=1), api_keys=[KEY, "afnemer-2"]) as running:
        for bsn in movers:
            response = requests.put(f"{running.url}/volgindicaties/{bsn}", json={}, headers={"X-API-KEY": KEY},
                                    timeout=TIMEOUT)
            assert response.status_code == 201
        running.set_as_of(CHANGE_DAY)
        yield running


@pytest.fixture()
def throttled(world):
    """A stand-in whose bucket holds one token and refills every 100 s: the 2nd request is always 429."""
    with start_brp_update_standin(world, as_of=CHANGE_DAY, api_keys=[KEY], rate_limit_per_second=0.01) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_leftover_faults(standin):
    yield
    standin.faults.clear()


def call(standin, method: str, path: str, *, key: str | None = KEY, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}) or {})
    if key is not None:
        headers.setdefault("X-API-KEY", key)
    return requests.request(method, f"{standin.url}{path}", headers=headers, timeout=TIMEOUT, **kwargs)


# --------------------------------------------------------------------------- success responses


def test_put_new_volgindicatie_is_201_hal_json_and_conforms(standin, world):
    bsn = sorted(world.at(CHANGE_DAY).persons)[0]
    response = call(standin, "PUT", f"/volgindicaties/{bsn}", json={})
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/hal+json")
    assert response.json() == {"burgerservicenummer": bsn, "begindatum": CHANGE_DAY.isoformat()}
    assert_conforms(standin.url, response)


@pytest.mark.parametrize("body", [{"einddatum": "2026-12-31"}, {}], ids=["set-einddatum", "clear-einddatum"])
def test_put_existing_volgindicatie_is_200_json_and_conforms(standin, movers, body):
    response = call(standin, "PUT", f"/volgindicaties/{movers[0]}", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json().get("einddatum") == body.get("einddatum")
    assert_conforms(standin.url, response)


def test_get_volgindicaties_conforms(standin, movers):
    response = call(standin, "GET", "/volgindicaties")
    assert response.status_code == 200
    assert set(movers) <= {v["burgerservicenummer"] for v in response.json()["volgindicaties"]}
    assert_conforms(standin.url, response)


def test_get_volgindicaties_of_another_afnemer_is_empty_and_conforms(standin):
    response = call(standin, "GET", "/volgindicaties", key="afnemer-2")
    assert response.status_code == 200 and response.json() == {"volgindicaties": []}
    assert_conforms(standin.url, response)


def test_get_one_volgindicatie_conforms(standin, movers):
    response = call(standin, "GET", f"/volgindicaties/{movers[-1]}")
    assert response.status_code == 200
    assert response.json()["burgerservicenummer"] == movers[-1]
    assert_conforms(standin.url, response)


@pytest.mark.parametrize("vanaf", [CHANGE_DAY.isoformat(), None], ids=["vanaf", "without-vanaf"])
def test_wijzigingen_conforms(standin, movers, vanaf):
    params = {"vanaf": vanaf} if vanaf else None
    response = call(standin, "GET", "/wijzigingen", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/hal+json")
    body = response.json()
    assert body["burgerservicenummers"] == movers
    assert body["_links"]["self"]["href"] == response.request.url
    assert_conforms(standin.url, response)


def test_wijzigingen_after_the_change_is_empty_and_conforms(standin):
    response = call(standin, "GET", "/wijzigingen", params={"vanaf": (CHANGE_DAY + timedelta(days=1)).isoformat()})
    assert response.status_code == 200 and response.json()["burgerservicenummers"] == []
    assert_conforms(standin.url, response)


# --------------------------------------------------------------------------- error responses


ERROR_CASES = {
    # case: (method, path, kwargs, status, code, invalid param names)
    "400-bsn-pattern-get": ("GET", "/volgindicaties/12345", {}, 400, "paramsValidation", ["burgerservicenummer"]),
    "400-bsn-pattern-put": ("PUT", "/volgindicaties/12345678A", {"json": {}}, 400, "paramsValidation",
                            ["burgerservicenummer"]),
    "400-einddatum": ("PUT", "/volgindicaties/999993653", {"json": {"einddatum": "31-12-2026"}}, 400,
                      "paramsValidation", ["einddatum"]),
    "400-unknown-body-param": ("PUT", "/volgindicaties/999993653", {"json": {"begindatum": "2026-01-01"}}, 400,
                               "paramsValidation", ["begindatum"]),
    "400-vanaf": ("GET", "/wijzigingen", {"params": {"vanaf": "gisteren"}}, 400, "paramsValidation", ["vanaf"]),
    "400-unknown-query-param": ("GET", "/wijzigingen", {"params": {"sinds": "2026-01-01"}}, 400,
                                "paramsValidation", ["sinds"]),
    "401-no-key-volgindicaties": ("GET", "/volgindicaties", {"key": None}, 401, "authentication", None),
    "401-no-key-wijzigingen": ("GET", "/wijzigingen", {"key": None}, 401, "authentication", None),
    "403-wrong-key-put": ("PUT", "/volgindicaties/999993653", {"key": "not-a-key", "json": {}}, 403,
                          "autorisation", None),
    "403-wrong-key-get": ("GET", "/volgindicaties/999993653", {"key": "not-a-key"}, 403, "autorisation", None),
    "404-no-volgindicatie": ("GET", "/volgindicaties/999993653", {}, 404, "notFound", None),
    "406-volgindicaties": ("GET", "/volgindicaties", {"headers": {"Accept": "text/csv"}}, 406, "notAcceptable", None),
    "406-volgindicatie": ("GET", "/volgindicaties/999993653", {"headers": {"Accept": "application/xml"}}, 406,
                          "notAcceptable", None),
    "406-put": ("PUT", "/volgindicaties/999993653", {"json": {}, "headers": {"Accept": "text/html"}}, 406,
                "notAcceptable", None),
    "406-wijzigingen": ("GET", "/wijzigingen", {"headers": {"Accept": "application/xml"}}, 406, "notAcceptable", None),
    "415-put": ("PUT", "/volgindicaties/999993653", {"data": "einddatum=2026-12-31",
                                                     "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
                415, "unsupported", None),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_responses_are_problem_json_and_conform(standin, case):
    method, path, kwargs, status, code, invalid = ERROR_CASES[case]
    kwargs = dict(kwargs)
    key = kwargs.pop("key", KEY)
    response = call(standin, method, path, key=key, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["instance"] == response.request.url
    if invalid is not None:
        assert [p["name"] for p in body["invalidParams"]] == invalid
    assert_conforms(standin.url, response)


def test_405_delete_is_a_foutbericht(standin):
    from openapi_schema_validator import OAS30Validator

    response = call(standin, "DELETE", "/volgindicaties/999993653")
    assert response.status_code == 405 and response.headers["content-type"] == "application/problem+json"
    assert response.headers["api-version"] == "1.0.0"
    schemas = load_spec(SPEC)["components"]["schemas"]
    validator = OAS30Validator({**schemas["Foutbericht"], "components": {"schemas": schemas}})
    assert list(validator.iter_errors(response.json())) == []
    assert response.json()["code"] == "methodNotAllowed"


def test_429_rate_limited_conforms_to_the_default_response(throttled):
    first = call(throttled, "GET", "/volgindicaties")
    second = call(throttled, "GET", "/volgindicaties")
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["code"] == "tooManyRequests"
    assert int(second.headers["Retry-After"]) >= 1
    assert_conforms(throttled.url, second)


@pytest.mark.parametrize("status,code", [(503, "notAvailable"), (500, "serverError")])
def test_injected_faults_conform(standin, status, code):
    standin.faults.fail_next(1, status=status)
    response = call(standin, "GET", "/wijzigingen", params={"vanaf": CHANGE_DAY.isoformat()})
    assert response.status_code == status and response.json()["code"] == code
    assert response.headers["Retry-After"] == "1"
    assert_conforms(standin.url, response)


# --------------------------------------------------------------------------- the validator is not vacuous


def _tampered(response: requests.Response, body: Any) -> requests.Response:
    forged = copy.copy(response)
    forged._content = json.dumps(body).encode("utf-8")  # noqa: SLF001 - requests has no public setter
    return forged


def test_validator_rejects_broken_bodies(standin, movers):
    wijzigingen = call(standin, "GET", "/wijzigingen")
    broken = {"_links": {"self": {"templated": True}}, "burgerservicenummers": [999993653]}
    errors = contract_errors(standin.url, _tampered(wijzigingen, broken))
    assert any("'href' is a required property" in e for e in errors)
    assert any(e.startswith("burgerservicenummers/0: ") for e in errors)

    listed = call(standin, "GET", "/volgindicaties")
    errors = contract_errors(standin.url, _tampered(listed, {"volgindicaties": [{"begindatum": 20260101}]}))
    assert any("volgindicaties/0/begindatum" in e for e in errors)

    problem = call(standin, "GET", "/volgindicaties/12345")
    errors = contract_errors(standin.url, _tampered(problem, {**problem.json(), "status": "400", "code": ""}))
    assert any(e.startswith("status: ") for e in errors) and any(e.startswith("code: ") for e in errors)
