"""Shared machinery of the fault-injection suite (``pytest -m faults``).

* ``ledger``   (session) — per fault class: faults injected, runs, runs that survived (succeeded, or
  failed cleanly as designed), rows lost or wrong (compared with the simulator's truth).
* ``leaks``    (session) — the secret scanner. Every fault test feeds it: its captured logs (caplog at
  DEBUG and capfd, through the autouse fixture ``_scan_test_output``), the texts of the exceptions it
  provoked (``leaks.feed``), subprocess outputs, Airflow task logs and XComs, and a dump of every
  text column of every ``icr_*`` table of its warehouse (``faults_pg``/``dump_warehouse``). A test
  that leaks fails at teardown; ``test_zz_leaks`` re-checks the whole session.
* ``pytest_sessionfinish`` writes ``docs/reliability.md`` from the ledger, only when every fault
  class of the suite ran (a partial run does not overwrite the table).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.support.logs import captured_log_text

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"

#: The fault classes of the issue, in table order; each test module sets FAULT_CLASS to one key.
FAULT_CLASSES: dict[str, str] = {
    "flaky_api": "Flaky API (429 s/date/0/none, 403 rate limit, 500-504, resets, truncated/invalid JSON, timeouts)",
    "tokens": "Token expiry and clock skew (re-mint mid-paging, server clock ahead, client clock ±30 s)",
    "moving_data": "Data moving while paging (adds at front/end, removals between page requests)",
    "killed": "Sync process killed (SIGKILL) while fetching, staging, in the merge, at commit, at random, "
              "while another run waits for its lock; PostgreSQL and SQLite",
    "warehouse": "Warehouse faults (backend terminated mid-merge, statement timeout, constraint violation, "
                 "disk full while staging or loading, PostgreSQL and SQLite)",
    "bad_records": "Bad records (missing/non-UUID ids, bad timestamps, wrong types, 1 MB strings, emoji, SQL, duplicates)",
    "bad_config": "Bad configuration (garbage/encrypted/non-RSA key, wrong App ID/API version, http://, unreachable)",
    "forged_tokens": "Forged tokens (alg none, HS256 with the public key, wrong key, expired, future iat, no iss)",
    "mass_removal": "Mass removal (guard stops the run; operator accepts via param and `airflow dags test`)",
    "leaks": "Secret scan of logs, task logs, XComs, exceptions and every warehouse text column",
    "hostile_api": "Hostile API (records nested 1,500 deep, lone surrogates, 1e400, 4,400-digit integers; endless "
                   "paging; oversized and dribbling answers; absurd pagination numbers; page-size limit; 20 s outage)",
    "secrets": "Secrets in error texts and DEBUG output (echoed and cut JWTs, DEBUG `dags test`, key file checks, "
               "plain-http hosts)",
}


# --------------------------------------------------------------------------- the ledger


@dataclass
class _Row:
    injected: int = 0
    runs: int = 0
    survived: int = 0
    rows_lost: int = 0
    tests: int = 0
    failed_tests: int = 0


class Ledger:
    def __init__(self) -> None:
        self.rows: dict[str, _Row] = defaultdict(_Row)
        self._lock = threading.Lock()

    def record(self, cls: str, *, injected: int = 0, runs: int = 0, survived: int = 0, rows_lost: int = 0) -> None:
        assert cls in FAULT_CLASSES, cls
        with self._lock:
            row = self.rows[cls]
            row.injected += int(injected)
            row.runs += int(runs)
            row.survived += int(survived)
            row.rows_lost += int(rows_lost)


LEDGER = Ledger()


# --------------------------------------------------------------------------- the leak scanner

JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# a cut JWT: one base64url JSON segment ("eyJ" = '{"') long enough to hold a header or claims
JWT_PART_RE = re.compile(r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]{16,}")
ACCESS_TOKEN_RE = re.compile(r"crs_[A-Za-z0-9]{12,}")
# runs that may hold part of a known JWT signature (base64url)
_B64URL_RUN_RE = re.compile(r"[A-Za-z0-9_-]{40,}")
#: this many characters of a known JWT signature, anywhere, are a leak
SIGNATURE_CHARS = 40
# a private-key header followed by key material (a bare header in a help text is no secret)
PEM_HEADER_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:\\n|\s)*(?:[A-Za-z-]+: [^\n]*(?:\\n|\s)+)*"
                           r"[A-Za-z0-9+/=]{40,}")


@dataclass
class Finding:
    fault_class: str
    source: str
    what: str
    excerpt: str


class LeakScanner:
    """Looks for secrets in texts: registered literals (PEM body lines, passphrases), parts of
    known JWTs (:meth:`add_token`: 40+ characters of a signature) and shapes (any JWT, whole or
    cut to a header or claims segment, any ``crs_`` access token, any PEM private-key header)."""

    def __init__(self) -> None:
        self.literals: dict[str, str] = {}
        self.tokens: set[str] = set()
        self._signature_windows: set[str] = set()
        self.findings: list[Finding] = []
        self.texts = 0
        self.chars = 0
        self.by_class: dict[str, int] = defaultdict(int)
        self.sources: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add_secret(self, value: str, label: str) -> None:
        """Register a secret. A PEM registers each base64 body line (a leak of any one line shows)."""
        if not value:
            return
        if "-----BEGIN" in value:
            body = [ln.strip() for ln in value.strip().splitlines() if ln.strip() and "-----" not in ln
                    and ":" not in ln]
            for ln in body:
                if len(ln) >= 40:
                    self.literals[ln] = f"{label} (PEM body line)"
            self.literals["".join(body)[:200]] = f"{label} (PEM body)"
        elif len(value) >= 6:
            self.literals[value] = label

    def add_token(self, token: str) -> None:
        """Register a JWT we minted: any 40 characters of its signature in a text are a leak (its
        header and claims segments are caught by shape)."""
        if token in self.tokens:
            return
        parts = token.split(".")
        if len(parts) != 3:
            return
        signature = parts[2]
        with self._lock:
            self.tokens.add(token)
            self._signature_windows.update(signature[i:i + SIGNATURE_CHARS]
                                           for i in range(len(signature) - SIGNATURE_CHARS + 1))

    def _signature_at(self, text: str) -> int:
        """Where 40+ characters of a known signature start in ``text``, or -1."""
        if not self._signature_windows:
            return -1
        windows = self._signature_windows
        for m in _B64URL_RUN_RE.finditer(text):
            run = m.group(0)
            for i in range(len(run) - SIGNATURE_CHARS + 1):
                if run[i:i + SIGNATURE_CHARS] in windows:
                    return m.start() + i
        return -1

    def scan(self, fault_class: str, source: str, text: Any) -> list[Finding]:
        if text is None:
            return []
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = str(text)
        found: list[Finding] = []
        whole_jwts = set()
        for rx, what in ((JWT_RE, "JWT"), (ACCESS_TOKEN_RE, "access token"), (PEM_HEADER_RE, "PEM private key")):
            for m in rx.finditer(text):
                found.append(Finding(fault_class, source, what, _excerpt(text, m.start())))
                if rx is JWT_RE:
                    whole_jwts.update(range(m.start(), m.end()))
        for m in JWT_PART_RE.finditer(text):
            if m.start() not in whole_jwts:
                found.append(Finding(fault_class, source, "partial JWT", _excerpt(text, m.start())))
        at = self._signature_at(text)
        if at >= 0:
            found.append(Finding(fault_class, source, "JWT signature (40+ characters)", _excerpt(text, at)))
        for literal, label in self.literals.items():
            at = text.find(literal)
            if at >= 0:
                found.append(Finding(fault_class, source, label, _excerpt(text, at)))
        with self._lock:
            self.texts += 1
            self.chars += len(text)
            self.by_class[fault_class] += 1
            self.sources[source.split(":")[0]] += 1
            self.findings.extend(found)
        return found


def _excerpt(text: str, at: int) -> str:
    # Never print the secret itself in a failure message: show what surrounds it, masked.
    start = max(0, at - 40)
    return (text[start:at] + "<SECRET…>").replace("\n", "\\n")


LEAKS = LeakScanner()


class LeakHandle:
    """Per-test handle on the session scanner (knows the test's fault class)."""

    def __init__(self, scanner: LeakScanner, fault_class: str, nodeid: str) -> None:
        self.scanner = scanner
        self.fault_class = fault_class
        self.nodeid = nodeid
        self.found: list[Finding] = []

    def feed(self, source: str, text: Any) -> None:
        self.found += self.scanner.scan(self.fault_class, f"{source}:{self.nodeid}", text)

    def feed_exception(self, exc: BaseException) -> None:
        import traceback

        self.feed("exception", f"{type(exc).__name__}: {exc}\n{exc!r}\n"
                  + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def secret(self, value: str, label: str) -> None:
        self.scanner.add_secret(value, label)


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


@pytest.fixture(scope="session")
def leak_scanner() -> LeakScanner:
    return LEAKS


def _fault_class(request: pytest.FixtureRequest) -> str:
    return getattr(request.module, "FAULT_CLASS", "leaks")


@pytest.fixture
def leaks(request: pytest.FixtureRequest) -> LeakHandle:
    handle = request.node.stash.get(_LEAKS_KEY, None)
    if handle is None:
        handle = LeakHandle(LEAKS, _fault_class(request), request.node.nodeid)
        request.node.stash[_LEAKS_KEY] = handle
    return handle


_LEAKS_KEY = pytest.StashKey[LeakHandle]()


@pytest.fixture(scope="session", autouse=True)
def _airflow_logging_configured() -> None:
    """Airflow configures logging when it is first imported: root level INFO, its own handlers.
    Had that happen inside a test, it would undo that test's DEBUG level and drop pytest's
    capture handler (the test's log records would go unscanned), so import it before any test."""
    import airflow.settings  # noqa: F401


@pytest.fixture(autouse=True)
def _scan_test_output(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture,
                      capfd: pytest.CaptureFixture[str], leaks: LeakHandle) -> Iterator[None]:
    """Capture everything the test logs (DEBUG and up, in every phase) and prints, and scan it at
    teardown."""
    caplog.set_level(logging.DEBUG)
    for noisy in ("urllib3", "asyncio", "filelock"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    yield
    leaks.feed("log", captured_log_text(caplog))
    out, err = capfd.readouterr()
    leaks.feed("stdout", out)
    leaks.feed("stderr", err)
    # show what was captured on failure, as pytest would have
    if out:
        print(out, end="")
    if err:
        import sys

        print(err, end="", file=sys.stderr)
    if leaks.found:
        pytest.fail("secret(s) leaked: " + "; ".join(f"{f.what} in {f.source.split(':')[0]}: …{f.excerpt}"
                                                      for f in leaks.found[:5]), pytrace=False)


@pytest.fixture(autouse=True)
def _register_minted_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every app JWT the hook mints in this process is known to the scanner, so that a cut piece
    of its signature is found too."""
    from icr.auth import AppJWT

    mint = AppJWT.token

    def token(self: AppJWT) -> str:
        value = mint(self)
        LEAKS.add_token(value)
        return value

    monkeypatch.setattr(AppJWT, "token", token)


# --------------------------------------------------------------------------- warehouses


def dump_warehouse(warehouse: Any, leaks: LeakHandle, label: str = "warehouse") -> int:
    """Feed every text column (text, varchar, json, jsonb) of every icr_* table to the scanner.

    Each table comes back as one aggregated string (the database concatenates: far faster than
    fetching row by row). Returns the number of tables scanned."""
    import sqlalchemy as sa

    pg = warehouse.dialect_name == "postgresql"
    scanned = 0
    with warehouse.read() as conn:
        insp = sa.inspect(conn)  # on the same connection: one transaction, one snapshot
        for name in insp.get_table_names():
            if not name.startswith("icr_"):
                continue
            cols = [c["name"] for c in insp.get_columns(name)
                    if any(t in str(c["type"]).upper() for t in ("TEXT", "CHAR", "JSON"))]
            if not cols:
                continue
            if pg:
                row = " || chr(31) || ".join(f'COALESCE(CAST("{c}" AS text), \'\')' for c in cols)
                sql = f'SELECT string_agg({row}, chr(10)) FROM "{name}"'
            else:
                row = " || char(31) || ".join(f'COALESCE(CAST("{c}" AS TEXT), \'\')' for c in cols)
                sql = f'SELECT group_concat({row}, char(10)) FROM "{name}"'
            leaks.feed(f"{label}.{name}", conn.exec_driver_sql(sql).scalar() or "")
            scanned += 1
    return scanned


@pytest.fixture
def faults_pg(pg_warehouse: Any, leaks: LeakHandle) -> Iterator[Any]:
    """The PostgreSQL warehouse of a fault test; all its icr_* text is scanned for secrets at teardown."""
    yield pg_warehouse
    try:
        dump_warehouse(pg_warehouse, leaks)
    finally:
        pg_warehouse.dispose()
    if leaks.found:
        pytest.fail("secret(s) found in the warehouse: "
                    + "; ".join(f"{f.what} in {f.source.split(':')[0]}" for f in leaks.found[:5]), pytrace=False)


# --------------------------------------------------------------------------- simulator + hook helpers


def register_sim_secrets(sim: Any, leaks: LeakHandle) -> None:
    leaks.secret(sim.private_key_pem, "simulator app private key")


@pytest.fixture
def hook_for(monkeypatch: pytest.MonkeyPatch, leaks: LeakHandle):
    """``hook_for(sim, **extras) -> ICRHook`` with AIRFLOW_CONN_ICR_DEFAULT pointing at ``sim``."""

    def make(sim: Any, *, password: str | None = None, login: str | None = None, host: str | None = None,
             **extra: Any) -> Any:
        from icr.hooks import ICRHook

        register_sim_secrets(sim, leaks)
        conn = {
            "conn_type": "icr",
            "host": host if host is not None else sim.base_url,
            "login": login if login is not None else sim.app_id,
            "password": password if password is not None else sim.private_key_pem,
            "extra": {"timeout": 5, "max_retries": 8, "max_retry_wait": 30, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_ICR_DEFAULT", json.dumps(conn))
        return ICRHook()

    return make


def new_run(prefix: str = "faults", when: datetime | None = None) -> Any:
    from icr.warehouse.runlog import RunContext

    return RunContext(run_id=f"{prefix}__{uuid.uuid4().hex[:10]}", logical_date=when or datetime.now(timezone.utc),
                      dag_id="icr_installations_sync")


# --------------------------------------------------------------------------- truth comparison


def expected_hash(record: dict) -> str:
    """record_hash as specified (sha256 of canonical JSON: sorted keys, compact, UTF-8), computed here
    independently of icr.normalize."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TruthDiff:
    truth: int
    active: int
    missing: list[str] = field(default_factory=list)  # in the truth, not active in the warehouse
    extra: list[str] = field(default_factory=list)  # active in the warehouse, not in the truth
    wrong: list[str] = field(default_factory=list)  # hash or raw differs
    duplicated: int = 0  # active rows minus distinct active ids

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.wrong) + self.duplicated

    def __str__(self) -> str:
        return (f"truth={self.truth} active={self.active} missing={len(self.missing)} {self.missing[:3]} "
                f"extra={len(self.extra)} {self.extra[:3]} wrong={len(self.wrong)} {self.wrong[:3]} "
                f"duplicated={self.duplicated}")


def compare_with_truth(warehouse: Any, truth: Iterable[dict], *, check_raw: bool = True) -> TruthDiff:
    import sqlalchemy as sa

    expected = {rec["id"].lower(): rec for rec in truth}
    raw_col = "CAST(raw AS text)" if warehouse.dialect_name == "postgresql" else "raw"
    with warehouse.read() as conn:
        rows = conn.execute(sa.text(
            f"SELECT CAST(installation_id AS text), record_hash, {raw_col} FROM icr_installations "
            "WHERE deleted_at IS NULL")).all()
    seen: dict[str, tuple[str, str]] = {}
    for iid, h, raw in rows:
        seen[str(iid).lower()] = (h, raw)
    diff = TruthDiff(truth=len(expected), active=len(rows), duplicated=len(rows) - len(seen))
    diff.missing = sorted(set(expected) - set(seen))
    diff.extra = sorted(set(seen) - set(expected))
    for iid in set(expected) & set(seen):
        rec = expected[iid]
        h, raw = seen[iid]
        if h != expected_hash(rec) or (check_raw and json.loads(raw) != rec):
            diff.wrong.append(iid)
    return diff


def deleted_ids(warehouse: Any) -> set[str]:
    import sqlalchemy as sa

    with warehouse.read() as conn:
        return {str(r[0]).lower() for r in conn.execute(sa.text(
            "SELECT CAST(installation_id AS text) FROM icr_installation_state WHERE deleted_at IS NOT NULL"))}


def run_rows(warehouse: Any) -> list[dict]:
    import sqlalchemy as sa

    with warehouse.read() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM icr_sync_runs ORDER BY started_at")).mappings()]


def fingerprint(warehouse: Any) -> dict[str, Any]:
    """What "the warehouse as it is" means: state ids + hashes + removal flags, history, daily,
    permissions, rejects, and the set of successful runs (timestamps are left out on purpose)."""
    import sqlalchemy as sa

    pg = warehouse.dialect_name == "postgresql"
    agg = "string_agg(x, ',' ORDER BY x)" if pg else "group_concat(x, ',')"
    cat = ("CAST(installation_id AS text) || ':' || record_hash || ':' || "
           "CASE WHEN deleted_at IS NULL THEN 'A' ELSE 'D' END")
    out: dict[str, Any] = {}
    with warehouse.read() as conn:
        def q(sql: str) -> Any:
            return conn.execute(sa.text(sql)).scalar()

        state = q(f"SELECT {agg} FROM (SELECT {cat} AS x FROM icr_installation_state ORDER BY 1) s")
        out["state_md5"] = hashlib.md5((state or "").encode()).hexdigest()
        out["state"] = q("SELECT count(*) FROM icr_installation_state")
        out["active"] = q("SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL")
        out["history"] = q("SELECT count(*) FROM icr_installation_history")
        out["history_open"] = q("SELECT count(*) FROM icr_installation_history WHERE valid_to IS NULL")
        out["daily"] = q("SELECT count(*) FROM icr_installation_daily")
        out["permissions"] = q("SELECT count(*) FROM icr_installation_permissions")
        out["rejected"] = q("SELECT count(*) FROM icr_rejected_records")
        out["successful_runs"] = q("SELECT count(*) FROM icr_sync_runs WHERE status = 'success'")
    return out


def staging_tables(warehouse: Any) -> list[str]:
    import sqlalchemy as sa

    return sorted(t for t in sa.inspect(warehouse.engine).get_table_names() if t.startswith("icr_stage_"))


# --------------------------------------------------------------------------- collection and the report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    cls = getattr(getattr(item, "module", None), "FAULT_CLASS", None)
    if cls is None:
        return
    row = LEDGER.rows[cls]
    if report.when == "call":
        row.tests += 1
    if report.failed and report.when in ("call", "teardown", "setup"):
        row.failed_tests += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ran = {cls for cls, row in LEDGER.rows.items() if row.tests}
    if not ran or ran != set(FAULT_CLASSES):
        return  # the faults suite did not run (or only part of it): keep the committed table
    lines = [
        "# Reliability",
        "",
        "<!-- Generated by the fault-injection suite (tests/faults, `pytest -m faults`) at the end of",
        "     the session. Do not edit by hand; rerun the suite. -->",
        "",
        f"Produced by `pytest -m faults` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC against the ICR "
        "simulator and PostgreSQL (the kills also into SQLite). *Faults injected* counts simulator-side "
        "faults (from its stats) and "
        "faults the suite caused itself (kills, terminated backends, timeouts, bad records, bad settings, "
        "forged tokens). A run *survived* when it ended as designed: succeeded with the right data, or "
        "failed cleanly (clear error, nothing half-written, next run fine). *Rows lost* compares the "
        "warehouse with the simulator's truth after the runs (missing, extra, duplicated or wrong rows, "
        "and installations wrongly marked removed). *Secrets found*: PEM key material, passphrases, JWTs "
        "or `crs_` access tokens in any captured log, subprocess output, Airflow task log, XCom, exception "
        "text or warehouse text column.",
        "",
        "| fault class | tests | faults injected | runs | runs survived | rows lost | secrets found |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = _Row()
    secrets_total = 0
    for cls, title in FAULT_CLASSES.items():
        row = LEDGER.rows[cls]
        secrets = sum(1 for f in LEAKS.findings if f.fault_class == cls)
        secrets_total += secrets
        status = "" if not row.failed_tests else f" ({row.failed_tests} failing)"
        lines.append(f"| {title} | {row.tests}{status} | {row.injected} | {row.runs} | {row.survived} | "
                     f"{row.rows_lost} | {secrets} |")
        for k in ("injected", "runs", "survived", "rows_lost", "tests", "failed_tests"):
            setattr(total, k, getattr(total, k) + getattr(row, k))
    lines.append(f"| **total** | {total.tests} | {total.injected} | {total.runs} | {total.survived} | "
                 f"{total.rows_lost} | {secrets_total} |")
    lines += [
        "",
        f"Secret scan: {LEAKS.texts} texts, {LEAKS.chars / 1e6:.1f} MB scanned "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(LEAKS.sources.items()))}).",
        "",
    ]
    if total.failed_tests:
        lines += [f"**{total.failed_tests} test(s) failed in this session** — see the suite output; a failing "
                  "test marks a reliability bug to fix, not a table to trust.", ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines), encoding="utf-8")
