"""The two servers of `bench.intake`, one uvicorn process each, with the same server settings.

python -m bench.intake_server relay --port P   # create_app(Settings()), MAILRELAY_* from env
python -m bench.intake_server bare --port P    # one FastAPI endpoint that answers 202
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, status


def bare_app() -> FastAPI:
    """The baseline: same path, same JSON body parsed, a small 202 answer, no database."""
    app = FastAPI()

    @app.post("/v1/tenants/{tenant_id}/messages", status_code=status.HTTP_202_ACCEPTED)
    async def create_message(
        tenant_id: str, body: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "status": "queued", "to": body.get("to")}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def relay_app() -> FastAPI:
    from app.main import create_app
    from app.settings import Settings

    return create_app(Settings())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("app", choices=("relay", "bare"))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = relay_app() if args.app == "relay" else bare_app()
    # The settings of `mailrelay serve`, minus the access log (identical for both servers).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
