import pytest

from icr.webhooks.settings import DEFAULT_CHANNEL, ReceiverSettings


def test_defaults_match_the_contract():
    s = ReceiverSettings.from_env({})
    assert (s.secret_conn_id, s.redis_conn_id, s.channel, s.warehouse_conn_id) == (
        "icr_webhook", "redis_default", "icr.installation_events", "icr_warehouse")
    assert DEFAULT_CHANNEL == "icr.installation_events"
    assert (s.host, s.port, s.path, s.max_body_bytes) == ("127.0.0.1", 8090, "/webhooks/icr", 1024 * 1024)


def test_environment_then_overrides():
    s = ReceiverSettings.from_env({"ICR_WEBHOOK_PORT": "9000", "ICR_WEBHOOK_CHANNEL": "c"}, channel="d")
    assert (s.port, s.channel) == (9000, "d")


@pytest.mark.parametrize("env, msg", [
    ({"ICR_WEBHOOK_PORT": "eighty"}, "ICR_WEBHOOK_PORT='eighty' is not a valid int"),
    ({"ICR_WEBHOOK_MAX_BODY_BYTES": "10"}, "at least 1024"),
    ({"ICR_WEBHOOK_PATH": "hook"}, "must start with '/'"),
])
def test_bad_values_are_named(env, msg):
    with pytest.raises(ValueError, match=msg):
        ReceiverSettings.from_env(env)
