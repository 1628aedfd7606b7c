"""Tests of the ICR simulator: real HTTP over loopback, tokens minted with PyJWT."""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import re
import time
import tracemalloc

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from tests.simulator import FAULT_KINDS, FaultConfig, ICRSimulator, SimulatorConfig, forge_token
from tests.simulator.data import ORG_TYPES, OTHER_PERMISSIONS
from tests.simulator.tokens import generate_private_key, private_pem, public_pem

VERSION = "2023-06-16"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def call(sim, method="GET", path="/app/installations", token=None, headers=None, timeout=5, session=None, **kw):
    h = {"Accept": "application/json", "X-ICR-Api-Version": VERSION}
    if token is None:
        token = sim.mint_jwt()
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    return (session or requests).request(method, sim.base_url + path, headers=h, timeout=timeout, **kw)


def page(sim, limit=None, page_no=None, **kw):
    params = {}
    if limit is not None:
        params["limit"] = limit
    if page_no is not None:
        params["page"] = page_no
    return call(sim, params=params, **kw)


# -- paging ---------------------------------------------------------------------------------------
def test_first_page_envelope_and_content_match_truth(simulator):
    r = page(simulator, 100, 0)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert int(r.headers["Content-Length"]) == len(r.content)
    body = r.json()
    assert list(body) == ["pagination", "installations"]
    assert body["pagination"] == {"total": 1000, "currentPage": 0, "pageCount": 10, "nextPage": 1, "prevPage": None}
    truth = list(simulator.truth())
    assert body["installations"] == truth[:100]
    mid = page(simulator, 100, 4).json()
    assert mid["pagination"] == {"total": 1000, "currentPage": 4, "pageCount": 10, "nextPage": 5, "prevPage": 3}
    assert mid["installations"] == truth[400:500]


def test_no_query_string_returns_page_zero_with_default_size(make_simulator):
    sim = make_simulator(installations=250, default_page_size=40)
    body = page(sim).json()
    assert body["pagination"]["currentPage"] == 0
    assert body["pagination"]["pageCount"] == 7
    assert len(body["installations"]) == 40


@pytest.mark.parametrize("policy", ["null", "absent"])
def test_last_page_and_past_the_end(make_simulator, policy):
    sim = make_simulator(installations=250, next_page_on_last=policy)
    last = page(sim, 100, 2).json()
    assert len(last["installations"]) == 50
    assert last["pagination"]["prevPage"] == 1
    first = page(sim, 100, 0).json()["pagination"]
    if policy == "null":
        assert "nextPage" in last["pagination"] and last["pagination"]["nextPage"] is None
        assert first["prevPage"] is None
    else:
        assert "nextPage" not in last["pagination"]
        assert "prevPage" not in first
    past = page(sim, 100, 3).json()
    assert past["installations"] == []
    assert past["pagination"]["total"] == 250 and past["pagination"]["pageCount"] == 3


def test_one_based_pages(make_simulator):
    sim = make_simulator(installations=30, page_base=1)
    p1 = page(sim, 10, 1).json()
    assert p1["pagination"]["currentPage"] == 1 and p1["pagination"]["nextPage"] == 2
    assert p1["installations"] == list(sim.truth())[:10]
    r = page(sim, 10, 0)
    assert r.status_code == 400 and r.json()["message"] == ["page must not be less than 1"]


def test_full_walk_collects_exactly_truth(make_simulator):
    sim = make_simulator(installations=1234, max_page_size=1000)
    ids, p = [], 0
    while True:
        body = page(sim, 1000, p).json()
        ids += [x["id"] for x in body["installations"]]
        if body["pagination"]["nextPage"] is None:
            break
        p = body["pagination"]["nextPage"]
    assert len(ids) == 1234 and set(ids) == sim.truth_ids()


@pytest.mark.parametrize(
    "params, messages",
    [
        ({"limit": 101}, ["limit must not be greater than 100"]),
        ({"limit": 0}, ["limit must not be less than 1"]),
        ({"limit": -5}, ["limit must not be less than 1"]),
        ({"limit": "abc"}, ["limit must be an integer number"]),
        ({"limit": ""}, ["limit must be an integer number"]),
        ({"limit": "1.5", "page": "x"}, ["limit must be an integer number", "page must be an integer number"]),
        ({"page": -1}, ["page must not be less than 0"]),
    ],
)
def test_bad_query_gets_nest_400(simulator, params, messages):
    r = call(simulator, params=params)
    assert r.status_code == 400
    assert r.json() == {"statusCode": 400, "message": messages, "error": "Bad Request"}


def test_max_page_size_is_configurable(make_simulator):
    sim = make_simulator(installations=10, max_page_size=5, default_page_size=5)
    assert page(sim, 5, 0).status_code == 200
    assert page(sim, 6, 0).json()["message"] == ["limit must not be greater than 5"]


def test_version_header(simulator):
    assert call(simulator, headers={"X-ICR-Api-Version": VERSION}).status_code == 200
    h = {"Authorization": f"Bearer {simulator.mint_jwt()}"}
    assert requests.get(simulator.base_url + "/app/installations", headers=h, timeout=5).status_code == 200
    r = call(simulator, headers={"X-ICR-Api-Version": "2099-01-01"})
    assert r.status_code == 400 and "2099-01-01" in r.json()["message"]


def test_single_installation_and_404(simulator):
    first = next(simulator.truth())
    r = call(simulator, path=f"/app/installations/{first['id']}")
    assert r.status_code == 200 and r.json() == first
    for bogus in ["00000000-0000-4000-8000-000000000000", "not-a-uuid", first["id"][:-1] + "0"]:
        if bogus == first["id"]:
            continue
        r = call(simulator, path=f"/app/installations/{bogus}")
        assert r.status_code == 404
        assert r.json()["statusCode"] == 404 and r.json()["error"] == "Not Found"
    simulator.remove_installations([first["id"]])
    assert call(simulator, path=f"/app/installations/{first['id']}").status_code == 404
    assert call(simulator, path="/app/nothing").status_code == 404


# -- data -----------------------------------------------------------------------------------------
def test_data_shape_is_the_sample_shape(simulator):
    records = list(simulator.truth())
    assert len(records) == 1000 == simulator.count
    top = ["id", "appId", "appNameId", "createdAt", "updatedAt", "permissions", "organization", "accessTokensUrl"]
    org_keys = ["id", "url", "zip", "city", "logo", "type", "website", "fullName", "isPublic", "createdAt",
                "updatedAt", "countryCode", "physicalAddress", "registrationNumber", "organizationIndustries"]
    now = time.time()
    names = set()
    for rec in records:
        assert list(rec) == top
        org = rec["organization"]
        assert list(org) == org_keys
        assert UUID4.match(rec["id"]) and UUID4.match(org["id"])
        assert rec["appId"] == simulator.app_id
        assert org["url"] == f"undefined/organizations/{org['id']}"
        assert rec["accessTokensUrl"] == f"undefined/app/installations/{rec['id']}/accessTokens"
        for ts in (rec["createdAt"], rec["updatedAt"], org["createdAt"], org["updatedAt"]):
            assert ISO_MS.match(ts)
        assert rec["createdAt"] <= rec["updatedAt"] and org["createdAt"] <= rec["createdAt"]
        created = time.mktime(time.strptime(rec["createdAt"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert created < now
        assert rec["permissions"]["organization_info"] in ("VIEW", "REQUEST", "WRITE")
        assert set(rec["permissions"]) <= {"organization_info", *OTHER_PERMISSIONS}
        assert set(rec["permissions"].values()) <= {"VIEW", "REQUEST", "WRITE"}
        assert org["type"] in ORG_TYPES
        assert re.fullmatch(r"[A-Z]{2}", org["countryCode"])
        assert isinstance(org["isPublic"], bool)
        assert org["organizationIndustries"] is None or set(org["organizationIndustries"]) == {"code", "name"}
        names.add(org["fullName"])
    assert len({r["id"] for r in records}) == 1000
    assert len({r["organization"]["id"] for r in records}) == 1000
    assert {r["organization"]["type"] for r in records} == set(ORG_TYPES)
    assert any(not n.isascii() for n in names)
    assert any(any(0x4E00 <= ord(c) <= 0x9FFF for c in n) for n in names)  # CJK
    assert any(any(ord(c) >= 0x1F300 for c in n) for n in names)  # emoji
    assert any(r["organization"]["organizationIndustries"] is None for r in records)
    assert any(len(r["permissions"]) == 1 for r in records) and any(len(r["permissions"]) == 5 for r in records)
    span = {r["createdAt"][:4] for r in records}
    assert len(span) >= 3  # spread over ~3 years


def test_data_is_deterministic_per_seed(make_simulator):
    a, b, c = make_simulator(seed=7), make_simulator(seed=7), make_simulator(seed=8)
    assert a.app_id == b.app_id != c.app_id
    pa, pb, pc = (page(s, 50, 3).json()["installations"] for s in (a, b, c))
    assert pa == pb
    assert {x["id"] for x in pa}.isdisjoint({x["id"] for x in pc})


def test_utf8_on_the_wire(simulator):
    r = page(simulator, 100, 0)
    raw = r.content
    assert b"\\u" not in raw  # not ASCII-escaped, like NestJS
    raw.decode("utf-8")
    assert any(not x["organization"]["fullName"].isascii() for x in r.json()["installations"])


# -- tokens ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _load(pem: str):
    return serialization.load_pem_private_key(pem.encode(), None, unsafe_skip_rsa_key_validation=True)


def _enc(claims, pem, algorithm="RS256"):
    return jwt.encode(claims, _load(pem), algorithm=algorithm)


def _claims(sim, **over):
    now = int(sim.now())
    c = {"iat": now - 60, "exp": now + 540, "iss": sim.app_id}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def _forged(sim, name):
    now = int(sim.now())
    pub = public_pem(_load(sim.private_key_pem).public_key())
    other = private_pem(generate_private_key(12345, 0, 2048))
    return {
        "alg_none": forge_token(_claims(sim), alg="none"),
        "alg_none_upper": forge_token(_claims(sim), alg="None"),
        "hs256_public_pem": forge_token(_claims(sim), alg="HS256", secret=pub.encode()),
        "rs512": _enc(_claims(sim), sim.private_key_pem, "RS512"),
        "wrong_key": _enc(_claims(sim), other, "RS256"),
        "unknown_iss": _enc(_claims(sim, iss="d23967cc-dd16-452b-8af4-869965745978"), sim.private_key_pem, "RS256"),
        "missing_iss": _enc(_claims(sim, iss=None), sim.private_key_pem, "RS256"),
        "expired": _enc(_claims(sim, iat=now - 700, exp=now - 1), sim.private_key_pem, "RS256"),
        "exp_too_far": _enc(_claims(sim, exp=now + 660), sim.private_key_pem, "RS256"),
        "missing_exp": _enc(_claims(sim, exp=None), sim.private_key_pem, "RS256"),
        "float_exp": _enc(_claims(sim, exp=now + 300.5), sim.private_key_pem, "RS256"),
        "iat_future": _enc(_claims(sim, iat=now + 120), sim.private_key_pem, "RS256"),
        "missing_iat": _enc(_claims(sim, iat=None), sim.private_key_pem, "RS256"),
        "tampered": (lambda t: t[:-20] + ("A" if t[-20] != "A" else "B") + t[-19:])(
            _enc(_claims(sim), sim.private_key_pem, "RS256")
        ),
        "payload_swapped": (lambda good, bad: ".".join([good.split(".")[0], bad.split(".")[1], good.split(".")[2]]))(
            _enc(_claims(sim), sim.private_key_pem, "RS256"),
            _enc(_claims(sim, exp=now + 590), sim.private_key_pem, "RS256"),
        ),
        "garbage": "not.a.jwt",
        "garbage2": "abc",
    }[name]


FORGERIES = {
    "alg_none": "'alg' must be RS256",
    "alg_none_upper": "'alg' must be RS256",
    "hs256_public_pem": "'alg' must be RS256",
    "rs512": "'alg' must be RS256",
    "wrong_key": "Invalid signature",
    "unknown_iss": "Unknown issuer",
    "missing_iss": "'Issuer' claim ('iss') must be present",
    "expired": "JWT expired",
    "exp_too_far": "'Expiration time' claim ('exp') is too far in the future",
    "missing_exp": "'Expiration time' claim ('exp') is missing",
    "float_exp": "'Expiration time' claim ('exp') must be an Integer",
    "iat_future": "'Issued at' claim ('iat') is in the future",
    "missing_iat": "'Issued at' claim ('iat') is missing",
    "tampered": "Invalid signature",
    "payload_swapped": "Invalid signature",
    "garbage": "A JSON web token could not be decoded",
    "garbage2": "A JSON web token could not be decoded",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_or_bad_tokens_get_401(simulator, name):
    token = _forged(simulator, name)
    for path in ("/app/installations", f"/app/installations/{next(simulator.truth())['id']}"):
        r = call(simulator, path=path, token=token)
        assert r.status_code == 401, (name, r.text)
        assert r.json() == {"statusCode": 401, "message": FORGERIES[name], "error": "Unauthorized"}
    r = call(simulator, "POST", f"/app/installations/{next(simulator.truth())['id']}/accessTokens", token=token)
    assert r.status_code == 401
    st = simulator.stats
    assert st["tokens_accepted"] == 0 and st["tokens_rejected"] == 3
    assert st["rejections"] == {FORGERIES[name]: 3}


def test_hs256_forgery_would_verify_with_naive_hmac(simulator):
    """Guard that the HS256 forgery in the test above is a real key-confusion attack."""
    pub = public_pem(serialization.load_pem_private_key(simulator.private_key_pem.encode(), None).public_key())
    token = forge_token(_claims(simulator), alg="HS256", secret=pub.encode())
    head, body, sig = token.split(".")
    import hmac

    expect = hmac.new(pub.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == expect


def test_missing_or_malformed_authorization(simulator):
    r = call(simulator, token="")
    assert r.status_code == 401 and "Authorization" in r.json()["message"]
    r = call(simulator, token="", headers={"Authorization": f"token {simulator.mint_jwt()}"})
    assert r.status_code == 401
    assert simulator.stats["tokens_rejected"] == 2


def test_valid_token_and_key_rotation(simulator):
    assert call(simulator).status_code == 200
    second = simulator.add_app_key()
    assert second != simulator.private_key_pem and "BEGIN PRIVATE KEY" in second
    assert len(simulator.public_key_fingerprints) == 2
    t2 = simulator.mint_jwt(pem=second)
    assert call(simulator, token=t2).status_code == 200
    simulator.revoke_app_key(second)
    r = call(simulator, token=t2)
    assert r.status_code == 401 and r.json()["message"] == "Invalid signature"
    assert call(simulator).status_code == 200  # first key still active
    assert len(simulator.public_key_fingerprints) == 1


def test_fingerprint_format(simulator):
    key = serialization.load_pem_private_key(simulator.private_key_pem.encode(), None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    expect = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert simulator.public_key_fingerprints == [expect]
    assert simulator.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")


def test_token_cache_still_checks_the_clock(simulator):
    token = simulator.mint_jwt()
    assert call(simulator, token=token).status_code == 200
    simulator.faults.clock_offset_s = 700  # the same (cached) token is now expired
    r = call(simulator, token=token)
    assert r.status_code == 401 and r.json()["message"] == "JWT expired"


@pytest.mark.parametrize("offset, message", [(3600, "JWT expired"), (-3600, "'Expiration time' claim ('exp') is too far in the future")])
def test_clock_offset(simulator, offset, message):
    simulator.faults.clock_offset_s = offset
    local = jwt.encode({"iat": int(time.time()) - 60, "exp": int(time.time()) + 540, "iss": simulator.app_id},
                       simulator.private_key_pem, algorithm="RS256")
    r = call(simulator, token=local)
    assert r.status_code == 401 and r.json()["message"] == message
    assert call(simulator, token=simulator.mint_jwt()).status_code == 200  # minted on the server clock


# -- access tokens --------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [200, 201])
def test_access_tokens(make_simulator, status):
    sim = make_simulator(installations=20, access_token_status=status)
    inst = list(sim.truth())[3]
    r = call(sim, "POST", f"/app/installations/{inst['id']}/accessTokens", json={})
    assert r.status_code == status
    tok = r.json()
    assert list(tok) == ["id", "createdAt", "updatedAt", "token", "expiresAt", "isActive", "permissions",
                         "appId", "installationId", "organizationId"]
    assert tok["token"].startswith("crs_") and len(tok["token"]) > 20
    assert tok["installationId"] == inst["id"] and tok["organizationId"] == inst["organization"]["id"]
    assert tok["permissions"] == inst["permissions"] and tok["isActive"] is True and tok["appId"] == sim.app_id
    exp = time.mktime(time.strptime(tok["expiresAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    cre = time.mktime(time.strptime(tok["createdAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert exp - cre == 7200
    # an access token is not an app JWT
    r2 = call(sim, token=tok["token"])
    assert r2.status_code == 401
    # app token
    app = call(sim, "POST", "/app/accessTokens")
    assert app.status_code == status
    assert set(app.json()) == {"id", "createdAt", "updatedAt", "token", "expiresAt", "isActive", "permissions", "appId"}
    # revoke with the access token
    rv = call(sim, "DELETE", "/app/installations/token", token=tok["token"])
    assert rv.status_code == 204 and rv.content == b""
    assert not sim.access_token_active(tok["token"])
    assert call(sim, "DELETE", "/app/installations/token", token=tok["token"]).status_code == 401
    assert call(sim, "DELETE", "/app/installations/token").status_code == 401  # a JWT is not an access token
    assert call(sim, "POST", "/app/installations/00000000-0000-4000-8000-000000000000/accessTokens").status_code == 404


# -- faults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_is_observable(make_simulator, kind):
    sim = make_simulator(installations=50, faults=FaultConfig(slow_seconds=0.6, retry_after_seconds=2))
    s = requests.Session()
    sim.fail_next(kind)
    t0 = time.time()
    if kind == "reset":
        with pytest.raises(requests.ConnectionError):
            page(sim, 10, 0, session=s)
    elif kind == "slow":
        with pytest.raises(requests.ReadTimeout):
            page(sim, 10, 0, session=s, timeout=0.2)
    else:
        r = page(sim, 10, 0, session=s)
        if kind.startswith("429"):
            assert r.status_code == 429 and r.json()["statusCode"] == 429
            ra = r.headers.get("Retry-After")
            if kind == "429_seconds":
                assert ra == "2"
            elif kind == "429_zero":
                assert ra == "0"
            elif kind == "429_none":
                assert ra is None
            else:
                when = email.utils.parsedate_to_datetime(ra).timestamp()
                assert t0 + 1 <= when <= t0 + 5
        elif kind == "403_rate_limit":
            assert r.status_code == 403
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert t0 < int(r.headers["x-ratelimit-reset"]) <= t0 + 4
        elif kind in ("500", "503"):
            assert r.status_code == int(kind) and r.json()["statusCode"] == int(kind)
        elif kind in ("502", "504"):
            assert r.status_code == int(kind) and r.headers["Content-Type"].startswith("text/html")
        elif kind == "truncated_json":
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content)
            with pytest.raises(ValueError):
                r.json()
        elif kind == "invalid_json":
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
            with pytest.raises(ValueError):
                r.json()
    assert sim.stats["faults_injected"] == {kind: 1}
    r = page(sim, 10, 0, session=s, timeout=5)  # exactly one fault, then normal service
    assert r.status_code == 200 and len(r.json()["installations"]) == 10


def test_fail_next_counts_and_applies_to_any_app_endpoint(simulator):
    simulator.fail_next("503", n=2)
    first = next(simulator.truth())["id"]
    assert call(simulator, path=f"/app/installations/{first}").status_code == 503
    assert call(simulator, "POST", "/app/accessTokens").status_code == 503
    assert call(simulator, path=f"/app/installations/{first}").status_code == 200
    assert simulator.stats["faults_injected"] == {"503": 2}


def _statuses(sim, n):
    s = requests.Session()
    return [page(sim, 10, i % 5, session=s).status_code for i in range(n)]


def test_error_rate_is_seeded_bounded_and_scoped(make_simulator):
    cfg = dict(installations=50, faults=dict(error_rate=0.5, fault_kinds=["503", "429_zero"]))
    a, b = make_simulator(**cfg), make_simulator(**cfg)
    sa, sb = _statuses(a, 30), _statuses(b, 30)
    assert sa == sb
    assert 5 <= sum(x != 200 for x in sa) <= 25 and set(sa) == {200, 503, 429}
    c = make_simulator(installations=50, faults=dict(error_rate=1.0, fault_kinds=["500"], max_faults=3))
    assert _statuses(c, 6) == [500, 500, 500, 200, 200, 200]
    assert c.stats["faults_total"] == 3
    # scope "list": other endpoints are not hit by error_rate
    d = make_simulator(installations=5, faults=dict(error_rate=1.0, fault_kinds=["500"]))
    assert call(d, path=f"/app/installations/{next(d.truth())['id']}").status_code == 200
    d.faults.scope = "app"
    assert call(d, path=f"/app/installations/{next(d.truth())['id']}").status_code == 500


def test_latency_ms(simulator):
    s = requests.Session()
    page(simulator, 1, 0, session=s)
    simulator.faults.latency_ms = 150
    t = time.perf_counter()
    assert page(simulator, 1, 0, session=s).status_code == 200
    assert time.perf_counter() - t >= 0.15


def test_fault_config_validation():
    with pytest.raises(ValueError):
        FaultConfig(fault_kinds=["418"])
    with pytest.raises(ValueError):
        FaultConfig(error_rate=2)
    f = FaultConfig()
    with pytest.raises(ValueError):
        f.update(nope=1)
    with pytest.raises(ValueError):
        f.update(fault_kinds=["bogus"])
    assert f.fault_kinds and "bogus" not in f.fault_kinds


# -- changes --------------------------------------------------------------------------------------
def test_changes_are_reflected_in_truth_and_listing(make_simulator):
    sim = make_simulator(installations=300)
    before = [r["id"] for r in sim.truth()]
    added = sim.add_installations(7)
    assert len(added) == 7 and sim.count == 307
    assert [r["id"] for r in sim.truth()][-7:] == added
    removed = sim.remove_installations(10)
    assert len(set(removed)) == 10 and set(removed) <= set(before) and sim.count == 297
    removed += sim.remove_installations([before[0], added[0]])
    assert sim.count == 295
    with pytest.raises(KeyError):
        sim.remove_installations([before[0]])
    old = {r["id"]: r for r in sim.truth()}
    updated = sim.update_installations(5)
    assert len(updated) == 5
    new = {r["id"]: r for r in sim.truth()}
    assert set(new) == set(old)
    for iid in updated:
        assert new[iid]["permissions"] != old[iid]["permissions"]
        assert new[iid]["updatedAt"] > old[iid]["updatedAt"]
        assert new[iid]["organization"]["id"] == old[iid]["organization"]["id"]
    assert sum(new[i] != old[i] for i in new) == 5
    listed = []
    for p in range(3):
        listed += page(sim, 100, p).json()["installations"]
    assert [r["id"] for r in listed] == [r["id"] for r in sim.truth()]
    assert {r["id"]: r for r in listed} == new
    assert page(sim, 100, 0).json()["pagination"]["total"] == 295
    assert sim.truth_ids() == set(new) and not (set(removed) & set(new))
    front = sim.add_installations(3, at="front")
    assert [r["id"] for r in page(sim, 3, 0).json()["installations"]] == front


def test_removal_rank_mapping_matches_a_naive_model(make_simulator):
    sim = make_simulator(installations=2000)
    model = [r["id"] for r in sim.truth()]
    for _ in range(5):
        gone = set(sim.remove_installations(97))
        model = [x for x in model if x not in gone]
        model = sim.add_installations(11, at="front") + model + sim.add_installations(13)
    assert [r["id"] for r in sim.truth()] == model
    for p in (0, 3, 7, 19):
        got = [r["id"] for r in page(sim, 100, p).json()["installations"]]
        assert got == model[p * 100 : p * 100 + 100]


def test_mutate_while_paging_shifts_pages(make_simulator):
    sim = make_simulator(installations=500, faults=dict(mutate_while_paging={"add_front": 10}))
    seen = []
    for p in range(5):
        seen += [r["id"] for r in page(sim, 100, p).json()["installations"]]
    assert sim.count == 540  # pages 1..4 each added 10 at the front
    # pages 2..4 each start 10 items earlier than they would have: 30 read twice, 40 never read
    assert len(seen) == 500 and len(set(seen)) == 470
    assert len(sim.truth_ids() - set(seen)) == 70
    calls = []
    sim.faults.mutate_while_paging = lambda s, n: calls.append((s is sim, n))
    for p in range(3):
        page(sim, 100, p)
    assert calls == [(True, 1), (True, 2)]


def test_million_installations_start_instantly(make_simulator):
    tracemalloc.start()
    t = time.perf_counter()
    sim = ICRSimulator(SimulatorConfig(installations=1_000_000, seed=7, max_page_size=1000))
    built = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert built < 1.0
    assert peak < 5_000_000  # nothing per installation
    sim.start()
    try:
        s = requests.Session()
        t = time.perf_counter()
        body = page(sim, 1000, 500, session=s).json()
        assert time.perf_counter() - t < 2.0
        assert body["pagination"] == {"total": 1_000_000, "currentPage": 500, "pageCount": 1000,
                                      "nextPage": 501, "prevPage": 499}
        assert len(body["installations"]) == 1000
        mid = body["installations"][123]
        assert call(sim, path=f"/app/installations/{mid['id']}", session=s).json() == mid
        sim.remove_installations(1000)
        assert page(sim, 100, 9999, session=s).json()["pagination"]["total"] == 999_000
    finally:
        sim.stop()


# -- server ---------------------------------------------------------------------------------------
def test_keep_alive_and_stats(simulator):
    s = requests.Session()
    for _ in range(5):
        assert page(simulator, 10, 0, session=s).status_code == 200
    call(simulator, token="garbage", session=s)
    st = simulator.stats
    assert st["connections"] == 1
    assert st["requests"] == 6 and st["by_status"] == {200: 5, 401: 1}
    assert st["by_kind"] == {"list": 6} and st["pages_served"] == 5 and st["installations_served"] == 50
    assert st["tokens_accepted"] == 5 and st["tokens_rejected"] == 1
    simulator.reset_stats()
    assert simulator.stats["requests"] == 0


def test_admin_api(simulator):
    base = simulator.base_url
    st = requests.get(base + "/_sim/state", timeout=5).json()
    assert st["count"] == 1000 and st["app_id"] == simulator.app_id and st["fingerprints"] == simulator.public_key_fingerprints
    r = requests.post(base + "/_sim/changes", json={"add": 5, "remove": 3, "update": 2}, timeout=5).json()
    assert len(r["added"]) == 5 and len(r["removed"]) == 3 and len(r["updated"]) == 2 and r["count"] == 1002
    assert simulator.count == 1002
    ids = requests.get(base + "/_sim/truth_ids", timeout=5).json()
    assert ids["count"] == 1002 and set(ids["ids"]) == simulator.truth_ids()
    r = requests.post(base + "/_sim/faults", json={"latency_ms": 5, "fail_next": {"kind": "502", "n": 1}}, timeout=5)
    assert r.status_code == 200 and simulator.faults.latency_ms == 5
    assert call(simulator).status_code == 502
    assert requests.post(base + "/_sim/faults", json={"bogus": 1}, timeout=5).status_code == 400
    assert requests.post(base + "/_sim/changes", json={"explode": 1}, timeout=5).status_code == 400
    assert requests.post(base + "/_sim/reset_stats", timeout=5).json() == {"ok": True}
    assert simulator.stats["requests"] == 0
    assert requests.get(base + "/_sim/state", timeout=5).json()["stats"]["requests"] == 0


def test_stop_releases_the_port_and_clients_see_closed_connections(make_simulator):
    sim = make_simulator(installations=5)
    s = requests.Session()
    assert page(sim, 1, 0, session=s).status_code == 200
    url = sim.base_url
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        s.get(url + "/app/installations", timeout=2)


def test_context_manager_and_kwargs_shortcut():
    with ICRSimulator(installations=3, seed=11) as sim:
        assert sim.running and sim.base_url.startswith("http://127.0.0.1:")
        assert page(sim).json()["pagination"]["total"] == 3
    assert not sim.running
