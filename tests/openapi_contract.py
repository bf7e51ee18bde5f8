"""OpenAPI contract checks shared by the stand-in contract tests (BRP, BRP Update, BAG, KvK).

A spec of the reference material is read once, copied, and given the stand-in's base URL as its
only server, so openapi-core resolves path and operation exactly as a client of the real service
would; a response's violations come back as ``"<json path>: <message>"`` lines to assert on.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import requests
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.deserializing.media_types.util import json_loads

#: Media types with the ``+json`` structured-syntax suffix (RFC 6839) the registries answer with.
#: openapi-core only decodes application/json by itself; without these deserializers the bodies
#: would be compared as raw bytes and pass vacuously.
PLUS_JSON_MEDIA_TYPES = ("application/problem+json", "application/hal+json")


@lru_cache(maxsize=None)
def load_spec(path: Path) -> dict[str, Any]:
    """The parsed spec file; cached and shared, so a caller that changes it works on a copy."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def spec_validator(
    path: Path,
    server_url: str,
    json_media_types: tuple[str, ...] = PLUS_JSON_MEDIA_TYPES,
    prepare: Callable[[dict[str, Any]], None] | None = None,
) -> OpenAPI:
    """An openapi-core validator for the spec at ``path`` whose only server is ``server_url``.

    ``json_media_types`` are decoded as JSON; ``prepare`` may adjust the in-memory copy of the
    spec before it is compiled (the file itself is never changed).
    """
    spec = copy.deepcopy(load_spec(path))
    spec["servers"] = [{"url": server_url}]
    if prepare is not None:
        prepare(spec)
    deserializers = {media_type: json_loads for media_type in json_media_types}
    return OpenAPI.from_dict(spec, config=Config(extra_media_type_deserializers=deserializers))


def flatten_errors(error: BaseException) -> list[str]:
    """openapi-core wraps jsonschema errors; unpack them into ``"<json path>: <message>"`` lines."""
    schema_errors = getattr(error, "schema_errors", None)
    if schema_errors:
        return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in schema_errors]
    cause = error.__cause__ or error.__context__
    if cause is not None and cause is not error:
        nested = flatten_errors(cause)
        if nested:
            return nested
    return [f"{type(error).__name__}: {error}"]


def response_errors(validator: OpenAPI, response: requests.Response) -> list[str]:
    """Every violation of the spec by ``response`` (status, media type, headers and body), as text."""
    result = validator.unmarshal_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))
    return [line for error in result.errors for line in flatten_errors(error)]
