"""The receiver's settings: one home for each, with its default and its environment variable.

Environment variables (all optional) override the defaults; ``python -m icr.webhooks`` flags
override both. Secrets are not settings: the webhook secret is the password of the Airflow
connection named by ``secret_conn_id`` and is read through Airflow's connection lookup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_PATH = "/webhooks/icr"
# A delivery is one installation object plus a base64 copy of the payload: a few KB. 1 MiB
# leaves room for large permission maps and stops a client that streams without end.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_SECRET_CONN_ID = "icr_webhook"
DEFAULT_WAREHOUSE_CONN_ID = "icr_warehouse"
DEFAULT_REDIS_CONN_ID = "redis_default"
DEFAULT_CHANNEL = "icr.installation_events"
# How long the secret read from the connection is reused before it is looked up again
# (a rotated secret takes effect within this time without a restart).
DEFAULT_SECRET_TTL_S = 60.0
# Redis publish: connect/IO timeout. A publish that fails is logged and dropped (the event is
# already in the inbox), so this bounds the work per delivery, not the delivery's answer.
DEFAULT_REDIS_TIMEOUT_S = 2.0
# Seconds ICR is asked to wait (Retry-After) when the warehouse cannot take the event (503).
DEFAULT_RETRY_AFTER_S = 30

_ENV = "ICR_WEBHOOK_"


@dataclass(frozen=True)
class ReceiverSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    secret_conn_id: str = DEFAULT_SECRET_CONN_ID
    warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID
    redis_conn_id: str = DEFAULT_REDIS_CONN_ID
    channel: str = DEFAULT_CHANNEL
    secret_ttl_s: float = DEFAULT_SECRET_TTL_S
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S
    retry_after_s: int = DEFAULT_RETRY_AFTER_S

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> ReceiverSettings:
        """Defaults, then ``ICR_WEBHOOK_<FIELD>`` variables (e.g. ICR_WEBHOOK_PORT), then overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(_ENV + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, type(getattr(cls, f.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"{_ENV}MAX_BODY_BYTES must be at least 1024, got {self.max_body_bytes}")
        if not self.path.startswith("/"):
            raise ValueError(f"{_ENV}PATH must start with '/', got {self.path!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"{_ENV}PORT must be 1..65535, got {self.port}")


def _convert(name: str, raw: str, kind: type) -> object:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{_ENV}{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
