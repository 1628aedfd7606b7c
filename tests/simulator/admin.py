"""The simulator's admin HTTP API (no auth; loopback clients only; off with ``admin_api=False``) —
lets a test drive a simulator that runs in another process (``python -m tests.simulator``):

* ``GET  /_sim/state``      → ``{"count", "app_id", "base_url", "fingerprints", "stats", "faults"}``
  (+ ``pending_fail_next``, ``warm_records``, ``warm_seconds``)
* ``GET  /_sim/truth_ids``  → ``{"count", "ids": [...]}`` (the ids the API lists now, in order)
* ``POST /_sim/changes``    JSON ``{"add": n, "add_front": n, "remove": n | [ids], "update": n | [ids],
  "suspend": n | [ids], "unsuspend": [ids]}`` → ``{"added": [...], "removed": [...], "updated": [...],
  "suspended": [...], "unsuspended": [...], "count": n}``
* ``POST /_sim/webhooks``   JSON ``{"urls": [...], "secret": "...", "faults": {WebhookFaults fields}}`` (each
  optional) → the state below; ``GET /_sim/webhooks`` → ``{"urls", "signed", "faults", "counts",
  "queued", "deliveries": [{event, installation_id, delivery_id, url, emitted_at, sent_at, status,
  attempts, faults}]}`` (never the secret)
* ``POST /_sim/webhooks/emit`` JSON ``{"event", "installation_id", "transaction"?}`` → one delivery of any
  event for an active installation (e.g. ``warehouseTransaction``)
* ``POST /_sim/faults``     JSON with any :class:`FaultConfig` fields (partial update), plus optional
  ``"fail_next": {"kind": "503", "n": 2}`` (or a list of such) → ``{"faults": {...}}``
* ``POST /_sim/reset_stats`` → ``{"ok": true}``
* ``POST /_sim/keys``        → ``{"private_key_pem", "fingerprint", "fingerprints"}``: one more app key
  (a key rotation), for a test that switches a connection to a new key
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING

from .responses import Response, error, json_response

if TYPE_CHECKING:
    from .server import ICRSimulator


def admin_request(sim: "ICRSimulator", method: str, path: str, body: bytes, client_ip: str) -> Response:
    """Answer one ``/_sim/...`` request to ``sim``."""
    if not sim.config.admin_api:
        return error(404, f"Cannot {method} {path}")
    if not _is_loopback(client_ip):
        return error(403, "the admin API answers loopback clients only")
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return error(400, "request body is not valid JSON")
    if method == "POST" and not isinstance(data, dict):
        return error(400, "request body must be a JSON object")
    route = _ROUTES.get((method, path))
    if route is None:
        return error(404, f"Cannot {method} {path}")
    try:
        return route(sim, data)
    except (ValueError, KeyError, TypeError) as exc:
        return error(400, str(exc))


def _is_loopback(client_ip: str) -> bool:
    try:
        return ipaddress.ip_address(client_ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def _state(sim: "ICRSimulator", data: dict) -> Response:
    return json_response(200, sim.state())


def _truth_ids(sim: "ICRSimulator", data: dict) -> Response:
    ids = sim.truth_id_list()
    return json_response(200, {"count": len(ids), "ids": ids})


def _changes(sim: "ICRSimulator", data: dict) -> Response:
    bad = set(data) - {"add", "add_front", "remove", "update", "suspend", "unsuspend"}
    if bad:
        return error(400, [f"unknown change {k!r}" for k in sorted(bad)])
    return json_response(200, sim.apply_changes(data))


def _faults(sim: "ICRSimulator", data: dict) -> Response:
    fail_next = data.pop("fail_next", None)
    if data:
        sim.faults.update(**data)
    if fail_next:
        for item in fail_next if isinstance(fail_next, list) else [fail_next]:
            sim.fail_next(item["kind"], int(item.get("n", 1)))
    state = sim.state()
    return json_response(200, {"faults": state["faults"], "pending_fail_next": state["pending_fail_next"]})


def _reset_stats(sim: "ICRSimulator", data: dict) -> Response:
    sim.reset_stats()
    return json_response(200, {"ok": True})


def _keys(sim: "ICRSimulator", data: dict) -> Response:
    pem = sim.add_app_key()
    return json_response(200, {"private_key_pem": pem, "fingerprint": sim.public_key_fingerprints[-1],
                               "fingerprints": sim.public_key_fingerprints})


def _webhooks_state(sim: "ICRSimulator", data: dict) -> Response:
    return json_response(200, sim.webhooks.state())


def _webhooks_configure(sim: "ICRSimulator", data: dict) -> Response:
    bad = set(data) - {"urls", "secret", "faults"}
    if bad:
        return error(400, [f"unknown webhook setting {k!r}" for k in sorted(bad)])
    sim.webhooks.configure(urls=data.get("urls"), secret=data.get("secret"), faults=data.get("faults"))
    return json_response(200, sim.webhooks.state())


def _webhooks_emit(sim: "ICRSimulator", data: dict) -> Response:
    rec = sim.installation(str(data["installation_id"]))
    if rec is None:
        return error(404, "Installation not found")
    sim.webhooks.emit(str(data["event"]), [rec], transaction=data.get("transaction"))
    return json_response(200, {"queued": True})


_ROUTES = {
    ("GET", "/_sim/state"): _state,
    ("GET", "/_sim/truth_ids"): _truth_ids,
    ("POST", "/_sim/changes"): _changes,
    ("POST", "/_sim/faults"): _faults,
    ("POST", "/_sim/reset_stats"): _reset_stats,
    ("POST", "/_sim/keys"): _keys,
    ("GET", "/_sim/webhooks"): _webhooks_state,
    ("POST", "/_sim/webhooks"): _webhooks_configure,
    ("POST", "/_sim/webhooks/emit"): _webhooks_emit,
}
