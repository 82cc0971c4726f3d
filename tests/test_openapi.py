"""The OpenAPI document is the API contract: it validates without warnings and lists every /api/v1/ URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db


def _api_routes(patterns: list, prefix: str = "") -> list[str]:
    routes: list[str] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes += _api_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            routes.append(prefix + str(pattern.pattern))
    return [route for route in routes if route.startswith("api/v1/")]


def _as_openapi_path(route: str) -> str:
    """Django route -> OpenAPI path with anonymous parameters (the schema may name `pk` as `id`)."""
    return "/" + re.sub(r"<(?:\w+:)?\w+>", "{}", route)


def test_the_schema_validates_with_no_warnings(tmp_path: Path):
    target = tmp_path / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    document = yaml.safe_load(target.read_text())
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Flexmarket bidding API"


def test_every_api_url_pattern_is_in_the_schema(tmp_path: Path):
    target = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(target))
    documented = {re.sub(r"\{\w+\}", "{}", path) for path in yaml.safe_load(target.read_text())["paths"]}
    routes = {_as_openapi_path(route) for route in _api_routes(get_resolver().url_patterns)}
    assert routes, "no /api/v1/ routes found"
    assert routes <= documented, f"undocumented: {sorted(routes - documented)}"


def test_every_operation_documents_its_error_contract(tmp_path: Path):
    target = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(target))
    document = yaml.safe_load(target.read_text())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "401" in responses and "403" in responses, f"{method.upper()} {path}"
            schema_ref = responses["401"]["content"]["application/json"]["schema"]["$ref"]
            assert schema_ref.endswith("/Error"), f"{method.upper()} {path}"


def test_swagger_ui_is_served_from_local_assets(client):
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower() and "unpkg" not in page.lower() and "jsdelivr" not in page.lower()
    assert "/static/drf_spectacular_sidecar/" in page
