"""The OpenAPI document as committed in `openapi/openapi.json` (checked by a test)."""

from __future__ import annotations

import json

from app.main import create_app
from app.settings import Settings


def render_openapi() -> str:
    """The document for a default configuration, stable across machines."""
    app = create_app(Settings())
    return json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n"
