"""The OSCP 2.0 JSON Schemas from ../shared/specs/oscp/json-schema-2.0, read at test time only.

They are GPL (SolarNetwork's copy of the OCA schemas): never copied into this repository. Tests that need them
skip, naming the missing folder, when ../shared is absent. Every schema is registered under its `$id` and under
`<base>/<file name>`, because references use file names and two files declare an `$id` that differs from theirs
(update-asset-measurements.json, version-url.json).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_DIR = ROOT.parent / "shared" / "specs" / "oscp" / "json-schema-2.0"
BASE = "http://www.openchargealliance.org/schemas/oscp/2.0/"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

# Which schema each endpoint's body follows (brief 4).
ENDPOINT_SCHEMAS = {
    "register": "register.json",
    "handshake": "handshake.json",
    "handshake_acknowledge": "handshake-acknowledge.json",
    "heartbeat": "heartbeat.json",
    "update_group_capacity_forecast": "update-group-capacity-forecast.json",
    "adjust_group_capacity_forecast": "adjust-group-capacity-forecast.json",
    "group_capacity_compliance_error": "group-capacity-compliance-error.json",
    "update_group_measurements": "update-group-measurements.json",
}


def schemas_available() -> bool:
    return SCHEMA_DIR.is_dir() and any(SCHEMA_DIR.glob("*.json"))


def require_schemas() -> None:
    if not schemas_available():
        pytest.skip(f"OSCP JSON schemas not found at {SCHEMA_DIR} (../shared is absent); they are GPL and are not "
                    "copied into this repository")


@cache
def _registry() -> Any:
    from referencing import Registry, Resource

    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text())
        resource = Resource.from_contents(contents)
        resources.append((contents["$id"], resource))
        resources.append((BASE + path.name, resource))
    return Registry().with_resources(resources)


def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(RFC3339.match(value))


def validator_for(schema_file: str) -> Any:
    from jsonschema import Draft7Validator, FormatChecker

    require_schemas()
    checker = FormatChecker()
    checker.checks("date-time")(_date_time)  # strict RFC 3339 (the default checker needs an extra package)
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    return Draft7Validator(schema, registry=_registry(), format_checker=checker)


def schema_errors(endpoint: str, body: Any) -> list[str]:
    """Every schema violation of `body` as the message for `endpoint` (empty list: valid)."""
    validator = validator_for(ENDPOINT_SCHEMAS[endpoint])
    return [f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in validator.iter_errors(body)]


def assert_valid(endpoint: str, body: Any) -> None:
    errors = schema_errors(endpoint, body)
    assert not errors, f"{endpoint} body violates the OSCP 2.0 schema: {errors}\n{json.dumps(body)[:2000]}"
