"""The dlt peer: the same API into the same PostgreSQL with dlt's ``rest_api`` source, the way a
dlt user would write it (page-number paginator, bearer auth, ``write_disposition="merge"``).

Runs in the benchmark's own dlt environment (``benchmarks/.venv-dlt``, made by
``benchmarks.dlt_env`` from ``benchmarks/requirements-dlt.txt``), never in the project's: it imports
nothing from ``icr``. ``python -m benchmarks.dlt_peer '<json>'`` prints one JSON line (the result).

The bearer token is the app JWT the ICR API asks for (RS256, ``iss`` = app id, ``exp`` at most 10
minutes ahead); a long load outlives one, so the auth object mints a new one before it expires,
as our client does. That is the only code beyond dlt's declarative configuration.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

API_VERSION = "2023-06-16"


def bearer_auth(app_id: str, pem: str) -> Any:
    import jwt
    from dlt.common.configuration.specs.base_configuration import configspec
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth

    @configspec
    class AppJWTAuth(BearerTokenAuth):
        """dlt's bearer auth whose token is an app JWT, minted again a minute before it expires."""

        expires_at: float = 0.0

        def __call__(self, request: Any) -> Any:
            now = time.time()
            if now >= self.expires_at - 60:
                self.token = jwt.encode({"iat": int(now) - 60, "exp": int(now) + 540, "iss": app_id},
                                        pem, algorithm="RS256")
                self.expires_at = now + 540
            return super().__call__(request)

    return AppJWTAuth(token="minted on the first request")


def source(args: dict[str, Any]) -> Any:
    from dlt.sources.rest_api import rest_api_source

    return rest_api_source({
        "client": {
            "base_url": args["base_url"].rstrip("/") + "/",
            "auth": bearer_auth(args["app_id"], open(args["pem_path"], encoding="ascii").read()),
            "headers": {"X-ICR-Api-Version": API_VERSION, "Accept": "application/json"},
            "paginator": {"type": "page_number", "base_page": 0, "page_param": "page",
                          "total_path": "pagination.pageCount"},
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [{
            "name": "installations",
            "endpoint": {"path": "app/installations", "params": {"limit": args["page_size"]},
                         "data_selector": "installations"},
        }],
    })


def _with_password(url: str) -> str:
    """dlt insists on a password in the credentials; a server with trust auth never asks for it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is not None or "@" not in parts.netloc:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user}:unused-by-trust-auth@{host}"))


def main() -> int:
    import dlt

    args = json.loads(sys.argv[1])
    credentials = _with_password(args["pg_url"])
    pipeline = dlt.pipeline(pipeline_name=args["pipeline_name"], pipelines_dir=args["pipelines_dir"],
                            destination=dlt.destinations.postgres(credentials=credentials),
                            dataset_name=args["dataset"])
    t0 = time.monotonic()
    info = pipeline.run(source(args))
    seconds = time.monotonic() - t0
    trace = pipeline.last_trace
    steps = {s.step: (s.finished_at - s.started_at).total_seconds() for s in trace.steps if s.finished_at}
    rows = {t: int(c) for t, c in (pipeline.last_trace.last_normalize_info.row_counts or {}).items()}
    sys.stdout.write("\n" + json.dumps({"seconds": seconds, "steps_seconds": steps, "rows": rows,
                                        "loads": len(info.loads_ids), "dlt_version": dlt.__version__}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
