"""``python -m icr.webhooks``: run the webhook receiver with uvicorn (docs/webhooks.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from icr.webhooks.settings import ReceiverSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icr.webhooks", description=(
        "Receive ICR webhook deliveries into the warehouse inbox (icr_webhook_inbox). "
        "Settings not given here come from ICR_WEBHOOK_* environment variables, else the defaults."))
    parser.add_argument("--host", help="listen address (ICR_WEBHOOK_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (ICR_WEBHOOK_PORT, default 8090)")
    parser.add_argument("--path", help="the URL path ICR posts to (ICR_WEBHOOK_PATH, default /webhooks/icr)")
    parser.add_argument("--max-body-bytes", type=int, help="body size limit (ICR_WEBHOOK_MAX_BODY_BYTES, 1 MiB)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true", help="also log every request (uvicorn's access log)")
    args = parser.parse_args(argv)
    try:
        settings = ReceiverSettings.from_env(host=args.host, port=args.port, path=args.path,
                                             max_body_bytes=args.max_body_bytes)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from icr.webhooks.receiver import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                access_log=args.access_log, server_header=False, date_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
