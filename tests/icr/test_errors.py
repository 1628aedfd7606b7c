"""icr.errors.is_permanent: which errors a later try of the Airflow task could fix (issue 18 item 4).

The API cases go through the real client against a loopback stub server, so the classification
is checked on the errors the client really raises once its own retries are spent.
"""

from __future__ import annotations

import pytest

from tests.icr.conftest import Reply


def _final_error(stub_server, make_client, reply: Reply, **client_kw):
    from icr.errors import ICRAPIError

    srv = stub_server(lambda seen: reply)
    client = make_client(srv.base_url, max_retries=2, **client_kw)
    with pytest.raises(ICRAPIError) as info:
        client.get_json("/app/installations", params={"limit": 1, "page": 0})
    return info.value


@pytest.mark.parametrize("reply", [
    Reply(400, {"statusCode": 400, "message": ["limit must not be greater than 50"], "error": "Bad Request"}),
    Reply(401, {"statusCode": 401, "message": "Unauthorized"}),
    Reply(403, {"statusCode": 403, "message": "Forbidden resource", "error": "Forbidden"}),
    Reply(404, {"statusCode": 404, "message": "Cannot GET /app/installations"}),
], ids=["400", "401-after-fresh-jwt", "403", "404"])
def test_final_api_answers_are_permanent(stub_server, make_client, reply):
    from icr.errors import is_permanent

    error = _final_error(stub_server, make_client, reply)
    assert error.status == reply.status
    assert is_permanent(error), error


@pytest.mark.parametrize("reply", [
    Reply(429, {"message": "slow down"}),
    Reply(500, {"message": "oops"}),
    Reply(502, "<html>bad gateway</html>"),
    Reply(503, {"message": "busy"}),
    Reply(504, "<html>gateway timeout</html>"),
    Reply(403, {"message": "API rate limit exceeded"}, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}),
    Reply(200, "<html>a proxy page, not JSON</html>"),
], ids=["429", "500", "502", "503", "504", "403-rate-limit", "200-not-json"])
def test_spent_retries_on_transient_answers_stay_retryable(stub_server, make_client, reply):
    from icr.errors import is_permanent

    error = _final_error(stub_server, make_client, reply)
    assert error.attempts == 2  # the client retried it itself first
    assert not is_permanent(error), error


def test_no_answer_at_all_stays_retryable(make_client):
    from icr.errors import ICRAPIError, is_permanent

    client = make_client("http://127.0.0.1:9", max_retries=2)  # nothing listens on port 9
    with pytest.raises(ICRAPIError) as info:
        client.get_json("/app/installations")
    assert info.value.status is None and not is_permanent(info.value)


def test_error_classes():
    from icr.errors import (
        ICRAPIError, ICRConfigError, ICRSnapshotError, MassRemovalError, QualityCheckError, RejectThresholdError,
        WarehouseError, WarehouseFullError, is_permanent,
    )

    for permanent in (ICRConfigError("login (App ID)", "is required"), ICRSnapshotError("page 0 is a list"),
                      MassRemovalError("too many removed"), RejectThresholdError("too many rejects"),
                      ICRAPIError(200, "POST", "/app/accessTokens", "answer has no 'token' field")):
        assert is_permanent(permanent), permanent
    for transient in (WarehouseError("busy"), WarehouseFullError("disk full"), QualityCheckError("count"),
                      ICRAPIError(None, "GET", "/app/installations", "connection reset"),
                      ICRAPIError(503, "GET", "/app/installations", "busy", attempts=6),
                      ConnectionError("dropped"), TimeoutError("slow"), ValueError("unknown")):
        assert not is_permanent(transient), transient
