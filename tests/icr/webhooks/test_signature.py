import hashlib
import hmac

from icr.webhooks import signature


def test_sign_is_sha256_hmac_of_signed_data_hex_with_prefix():
    expected = "sha256=" + hmac.new(b"s3cret", b"eyJhIjoxfQ==", hashlib.sha256).hexdigest()
    assert signature.sign("s3cret", "eyJhIjoxfQ==") == expected


def test_verify_accepts_the_right_signature_only():
    header = signature.sign("s3cret", "data")
    assert signature.verify("s3cret", "data", header)
    assert signature.verify("s3cret", "data", f"  {header} ")
    assert not signature.verify("other", "data", header)
    assert not signature.verify("s3cret", "datA", header)
    assert not signature.verify("s3cret", "data", header.upper())
    assert not signature.verify("s3cret", "data", header[len("sha256="):])  # prefix required
    assert not signature.verify("s3cret", "data", None)
    assert not signature.verify("s3cret", "data", "")
    assert not signature.verify("", "data", signature.sign("", "data"))  # no secret, nothing verifies
    assert not signature.verify("s3cret", "data", "sha256=é" + "0" * 63)  # non-ASCII does not raise


def test_delivery_id_is_lowercase_hex_sha256_of_signed_data():
    assert signature.delivery_id("abc") == hashlib.sha256(b"abc").hexdigest()
    assert signature.delivery_id("abc") != signature.delivery_id("abd")
