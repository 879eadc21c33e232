"""The committed OpenAPI document is what the app generates."""

from __future__ import annotations

import json
from pathlib import Path

from app.openapi import render_openapi

COMMITTED = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == render_openapi(), (
        "openapi/openapi.json is stale: run `make openapi` and commit it"
    )


def test_every_error_response_is_problem_json() -> None:
    document = json.loads(COMMITTED.read_text())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if status.startswith(("4", "5")) and path.startswith("/v1/"):
                    assert "application/problem+json" in response.get("content", {}), (
                        method,
                        path,
                        status,
                    )
