"""Key loading, JWT claims and re-minting, fingerprints, masking (no network)."""

from __future__ import annotations

import logging
import threading

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from icr import auth
from icr.auth import AppJWT, load_private_key, normalize_pem, public_key_fingerprint, validate_app_id
from icr.errors import ICRConfigError

from .conftest import APP_ID, PASSPHRASE, pem_body


def _same_key(a, b) -> bool:
    return a.private_numbers() == b.private_numbers()


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["pkcs1", "pkcs8"])
def test_loads_unencrypted_formats(keys, fmt):
    assert _same_key(load_private_key(getattr(keys, fmt)), keys.key)


@pytest.mark.parametrize("fmt", ["encrypted_pkcs8", "encrypted_pkcs1"])
def test_loads_encrypted_with_passphrase(keys, fmt):
    assert _same_key(load_private_key(getattr(keys, fmt), passphrase=PASSPHRASE), keys.key)


def test_loads_bytes_and_file(keys, tmp_path):
    assert _same_key(load_private_key(keys.pkcs8.encode()), keys.key)
    p = tmp_path / "icr_private_key.pem"
    p.write_text(keys.pkcs1)
    assert _same_key(load_private_key(None, path=str(p)), keys.key)
    assert _same_key(load_private_key("", path=str(p)), keys.key)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s.replace("\n", "\\n"), id="literal-backslash-n"),
        pytest.param(lambda s: s.replace("\n", "\r\n"), id="crlf"),
        pytest.param(lambda s: "\n\n   " + s + "   \n\t", id="surrounding-whitespace"),
        pytest.param(lambda s: s.replace("\n", " "), id="newlines-as-spaces"),
        pytest.param(lambda s: s.replace("\n", ""), id="newlines-stripped-by-password-input"),
        pytest.param(lambda s: '"' + s.replace("\n", "\\n") + '"', id="quoted"),
        pytest.param(lambda s: "\n".join("  " + line for line in s.splitlines()), id="indented"),
    ],
)
def test_tolerates_pasted_pem(keys, mangle):
    for pem in (keys.pkcs1, keys.pkcs8):
        assert _same_key(load_private_key(mangle(pem)), keys.key)


def test_tolerates_pasted_encrypted_pkcs8(keys):
    pem = keys.encrypted_pkcs8.replace("\n", "\\n")
    assert _same_key(load_private_key(pem, passphrase=PASSPHRASE), keys.key)


def test_normalize_pem_is_idempotent(keys):
    once = normalize_pem(keys.pkcs8)
    assert normalize_pem(once) == once == keys.pkcs8


# --------------------------------------------------------------------------- bad configs


def _err(excinfo) -> ICRConfigError:
    return excinfo.value


def test_no_key_given():
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(None, conn_id="icr_default")
    e = _err(ei)
    assert e.field == "password (private key PEM)"
    assert "password (private key PEM) or extra.private_key_path is required" in str(e)
    assert "icr_default" in str(e)


def test_whitespace_only_key_is_no_key():
    with pytest.raises(ICRConfigError, match="is required"):
        load_private_key("  \n ")


def test_key_file_missing(tmp_path):
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(None, path=str(tmp_path / "nope.pem"))
    assert ei.value.field == "extra.private_key_path"
    assert "does not exist" in str(ei.value)


def test_key_file_is_directory(tmp_path):
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(None, path=str(tmp_path))
    assert ei.value.field == "extra.private_key_path"


def test_key_file_unreadable(tmp_path, keys, monkeypatch):
    import os

    p = tmp_path / "k.pem"
    p.write_text(keys.pkcs8)
    p.chmod(0)
    with monkeypatch.context() as m:
        if os.geteuid() == 0:  # root opens any file: make the open fail as it would for a worker user
            def denied(path, *args, **kwargs):
                raise PermissionError(13, "Permission denied", str(path))

            m.setattr(auth.os, "open", denied)
        with pytest.raises(ICRConfigError, match="not readable") as ei:
            load_private_key(None, path=str(p))
    assert ei.value.field == "extra.private_key_path"


def test_key_file_not_pem_names_path_field(tmp_path):
    p = tmp_path / "k.pem"
    p.write_text("hello, I am not a key")
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(None, path=str(p))
    assert ei.value.field == "extra.private_key_path"
    assert "not a PEM private key" in str(ei.value)


def test_not_pem():
    with pytest.raises(ICRConfigError) as ei:
        load_private_key("this is my secret key text")
    assert ei.value.field == "password (private key PEM)"
    assert "not a PEM private key" in str(ei.value)
    assert "this is my secret key text" not in str(ei.value)


def test_public_key_instead_of_private(keys):
    pub = keys.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ICRConfigError, match="public key"):
        load_private_key(pub)


def test_corrupted_body(keys):
    lines = keys.pkcs8.splitlines()
    lines[5] = lines[5][::-1]
    bad = "\n".join(lines)
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(bad)
    assert ei.value.field == "password (private key PEM)"
    assert pem_body(keys.pkcs8) not in str(ei.value)


@pytest.mark.parametrize("fmt", ["encrypted_pkcs8", "encrypted_pkcs1"])
def test_encrypted_without_passphrase(keys, fmt):
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(getattr(keys, fmt))
    assert ei.value.field == "extra.private_key_passphrase"
    assert "encrypted" in str(ei.value)


@pytest.mark.parametrize("fmt", ["encrypted_pkcs8", "encrypted_pkcs1"])
def test_wrong_passphrase(keys, fmt):
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(getattr(keys, fmt), passphrase="wrong-passphrase-123")
    assert ei.value.field == "extra.private_key_passphrase"
    assert "wrong passphrase" in str(ei.value)
    assert "wrong-passphrase-123" not in str(ei.value)


def test_passphrase_on_unencrypted_key_is_ignored(keys, caplog):
    assert _same_key(load_private_key(keys.pkcs8, passphrase="unused-pass"), keys.key)
    assert "not encrypted" in caplog.text
    assert "unused-pass" not in caplog.text


@pytest.mark.parametrize(
    "make",
    [lambda: ec.generate_private_key(ec.SECP256R1()), lambda: ed25519.Ed25519PrivateKey.generate()],
    ids=["ec", "ed25519"],
)
def test_non_rsa_key(make):
    pem = make().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ICRConfigError) as ei:
        load_private_key(pem)
    assert ei.value.field == "password (private key PEM)"
    assert "RSA" in str(ei.value)
    assert pem_body(pem) not in str(ei.value)


def test_small_rsa_key_rejected():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ICRConfigError, match="1024 bits; at least 2048"):
        load_private_key(pem)


def test_openssh_key_gets_conversion_hint():
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(ICRConfigError, match="ssh-keygen"):
        load_private_key(text)


def test_no_secret_in_any_error(keys, tmp_path):
    """Every failure path: the message never contains the key body or the passphrase."""
    body = pem_body(keys.pkcs8)
    attempts = [
        lambda: load_private_key(keys.encrypted_pkcs8, passphrase="hunter2-secret"),
        lambda: load_private_key(keys.encrypted_pkcs8),
        lambda: load_private_key(keys.pkcs8.replace(body, body[::-1])),
        lambda: load_private_key(keys.pkcs8[:200]),
    ]
    for attempt in attempts:
        with pytest.raises(ICRConfigError) as ei:
            attempt()
        text = str(ei.value)
        assert body not in text and body[::-1] not in text and "hunter2-secret" not in text
        # the cryptography error (which may quote input) is not chained into tracebacks
        assert ei.value.__cause__ is None
        assert ei.value.__context__ is None or ei.value.__suppress_context__


# --------------------------------------------------------------------------- app id


def test_app_id_missing():
    for value in (None, "", "   "):
        with pytest.raises(ICRConfigError) as ei:
            validate_app_id(value)
        assert ei.value.field == "login (App ID)"


def test_app_id_not_uuid_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="icr.auth"):
        assert validate_app_id(" my-app ") == "my-app"
    assert "not a UUID" in caplog.text


def test_app_jwt_requires_app_id(keys):
    with pytest.raises(ICRConfigError, match=r"login \(App ID\)"):
        AppJWT("", keys.key)


# --------------------------------------------------------------------------- JWT


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_jwt_claims_exact(keys):
    clock = FakeClock(1_800_000_000.7)
    tok = AppJWT(APP_ID, keys.key, clock=clock).token()
    header = jwt.get_unverified_header(tok)
    assert header == {"alg": "RS256", "typ": "JWT"}
    claims = jwt.decode(tok, keys.key.public_key(), algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iat": 1_800_000_000 - 60, "exp": 1_800_000_000 + 540, "iss": APP_ID, "alg": "RS256"}
    assert claims["exp"] - claims["iat"] <= 600
    assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int)


def test_jwt_verifies_with_real_clock(keys):
    tok = AppJWT(APP_ID, keys.key).token()
    claims = jwt.decode(tok, keys.key.public_key(), algorithms=["RS256"], issuer=APP_ID)
    assert set(claims) == {"iat", "exp", "iss", "alg"}


def test_jwt_lifetime_never_more_than_540(keys):
    with pytest.raises(ValueError):
        AppJWT(APP_ID, keys.key, lifetime_s=541)


def test_jwt_cached_then_reminted_before_expiry(keys):
    clock = FakeClock()
    a = AppJWT(APP_ID, keys.key, clock=clock)
    t1 = a.token()
    clock.t += 400
    assert a.token() == t1 and a.minted == 1
    clock.t += 80  # 480 s in: 60 s left = refresh margin → re-mint
    t2 = a.token()
    assert t2 != t1 and a.minted == 2
    claims = jwt.decode(t2, keys.key.public_key(), algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims["exp"] == int(clock.t) + 540


def test_jwt_long_paging_clock_jumps(keys):
    """A 10,000-page sync outlives many tokens: every token handed out has >= margin left."""
    clock = FakeClock()
    a = AppJWT(APP_ID, keys.key, clock=clock)
    for _ in range(100):
        tok = a.token()
        exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
        assert exp - clock.t >= 60
        clock.t += 37
    assert 6 <= a.minted <= 10


def test_invalidate(keys):
    clock = FakeClock()
    a = AppJWT(APP_ID, keys.key, clock=clock)
    t1 = a.token()
    a.invalidate("some-other-token")  # another thread already re-minted: keep ours
    assert a.token() == t1
    a.invalidate(t1)
    clock.t += 1
    t2 = a.token()
    assert t2 != t1 and a.minted == 2
    a.invalidate()
    clock.t += 1
    assert a.token() != t2 and a.minted == 3


def test_thread_safe_single_mint(keys):
    a = AppJWT(APP_ID, keys.key)
    out: list[str] = []
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        out.append(a.token())

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 1 and a.minted == 1


def test_repr_has_no_secrets(keys):
    a = AppJWT(APP_ID, keys.key)
    tok = a.token()
    r = repr(a)
    assert APP_ID in r and tok not in r and "PRIVATE" not in r


# --------------------------------------------------------------------------- fingerprint & masking


def test_fingerprint_github_format(keys):
    import base64
    import hashlib

    der = keys.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert public_key_fingerprint(keys.key) == expected == public_key_fingerprint(keys.key.public_key())
    assert "=" not in expected
    assert auth.public_key_fingerprint_hex(keys.key) == hashlib.sha256(der).hexdigest()


def test_fingerprint_matches_simulator(keys):
    sim_tokens = pytest.importorskip("tests.simulator.tokens")
    assert public_key_fingerprint(keys.key) == sim_tokens.fingerprint(keys.key.public_key())


def test_mask_never_fails():
    auth.mask(None)
    auth.mask("")
    auth.mask(b"\xff\xfe")
    auth.mask("a-secret-value")


def test_tokens_and_keys_registered_with_masker(keys):
    from airflow.sdk._shared.secrets_masker import redact

    a = AppJWT(APP_ID, keys.key)
    tok = a.token()
    load_private_key(keys.encrypted_pkcs8, passphrase=PASSPHRASE)
    assert redact(f"token={tok}") == "token=***"
    assert tok not in redact(f"Authorization: Bearer {tok}")
    assert PASSPHRASE not in redact(f"pass {PASSPHRASE}")
    assert pem_body(keys.encrypted_pkcs8) not in redact(f"pem: {keys.encrypted_pkcs8}")
    one_line = "".join(keys.encrypted_pkcs8.splitlines()[1:-1])
    assert one_line not in redact(f"pem: {one_line}")


def test_mask_under_dags_test_does_not_send_the_secret_to_be_echoed(monkeypatch):
    """Under ``airflow dags test`` the supervisor's in-process comms log every message at DEBUG,
    value included: mask() keeps the secret in this process's masker (the supervisor's too)."""
    from airflow.sdk._shared.secrets_masker import redact
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms

    class Recorder:
        def __init__(self):
            self.sent = []

        def send(self, msg):
            self.sent.append(msg)

    class InProcess(Recorder, InProcessSupervisorComms):  # isinstance of the real class; records sends
        pass

    in_process = object.__new__(InProcess)
    Recorder.__init__(in_process)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", in_process, raising=False)
    auth.mask("in-process secret 8c41f0")
    assert in_process.sent == []
    assert "8c41f0" not in redact("value: in-process secret 8c41f0")

    # A task in its own process (a worker): the supervisor must be told, or it would not mask.
    subprocess_comms = Recorder()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", subprocess_comms)
    auth.mask("worker secret 5d27aa")
    assert [type(m).__name__ for m in subprocess_comms.sent] == ["MaskSecret"]
