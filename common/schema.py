"""OpenAPI generation: the error contract on every operation (kept apart from common.api to avoid an import
cycle between DRF's generics, its pagination setting and drf-spectacular)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema

from common.api import ErrorSerializer


class ErrorContractAutoSchema(AutoSchema):
    """Every operation documents the one error contract: 401/403/429 always, 404 with a path id, 400 on writes."""

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)  # type: ignore[arg-type]
        codes = ["401", "403", "429"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes.append("400")
        for code in codes:
            responses.setdefault(code, self._get_response_for_code(ErrorSerializer, code, direction=direction))
        return responses
