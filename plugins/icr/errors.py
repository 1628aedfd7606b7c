"""Exceptions with messages a user can act on.

Every message names what was wrong and where (the connection field, the request path, the
record). None may contain a private key, a passphrase, a JWT or an access token: the messages
reach Airflow task logs, ``icr_sync_runs.error`` and the UI. Every :class:`ICRError` redacts its
text by shape as it is made (``icr.redact``), as a last line of defence.
"""

from __future__ import annotations

from icr.redact import redact

#: HTTP statuses that may get another answer later. The client retries them itself; when its
#: retries run out, a later try of the Airflow task may still get through.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ICRError(Exception):
    """Base class for every error this package raises on purpose.

    Its text is redacted (:func:`icr.redact.redact`) when the error is made: a message that
    quotes an API answer may hold a JWT, cut or whole, that Airflow's masker would not catch.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ICRConfigError(ICRError):
    """The ``icr_default`` (or another ICR) connection is misconfigured.

    ``field`` is the connection field at fault as a human sees it in the UI, e.g.
    ``"login (App ID)"`` or ``"extra.private_key_passphrase"``.
    """

    def __init__(self, field: str, message: str, conn_id: str | None = None) -> None:
        self.field = field
        self.conn_id = conn_id
        where = f"connection {conn_id!r}, " if conn_id else ""
        super().__init__(f"{where}field {field}: {message}")


class ICRAPIError(ICRError):
    """ICR answered with an error status that is not worth retrying (or retries ran out)."""

    def __init__(
        self,
        status: int | None,
        method: str,
        path: str,
        message: str,
        *,
        attempts: int = 1,
        transient: bool | None = None,
    ) -> None:
        self.status = status
        #: worth asking again later; by default from the status (no response at all counts)
        self.transient = (status is None or status in TRANSIENT_STATUSES) if transient is None else transient
        self.method = method
        self.path = path
        self.api_message = redact(message)
        self.attempts = attempts
        status_text = f"HTTP {status}" if status is not None else "no response"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"ICR API {method} {path} failed with {status_text}{tries}: {message}")


class ICRSnapshotError(ICRError):
    """The API returned data that cannot form a trustworthy snapshot (e.g. malformed pages)."""


class WarehouseError(ICRError):
    """The warehouse refused a write or a check failed; the transaction was rolled back."""


class WarehouseFullError(WarehouseError):
    """The warehouse ran out of disk space (or hit its size limit); the transaction was rolled back."""


class MassRemovalError(WarehouseError):
    """A complete snapshot would mark too many active installations as removed."""


class RejectThresholdError(WarehouseError):
    """Too many records failed validation for the run to be trusted."""


class QualityCheckError(WarehouseError):
    """A post-load quality check failed."""


#: Errors no retry can fix: the same configuration, guard or answer gives the same error again.
PERMANENT_ERRORS: tuple[type[ICRError], ...] = (ICRConfigError, ICRSnapshotError, MassRemovalError,
                                                 RejectThresholdError)


def is_permanent(exc: BaseException) -> bool:
    """Whether a retry cannot fix ``exc``, so an Airflow task should fail now instead of retrying.

    Permanent: bad configuration, the run's guards (mass removal, reject share), a snapshot whose
    pages are malformed, and a final API answer (400, 401 after a fresh JWT, 403, 404, ...).
    Transient: 429, 5xx, timeouts and dropped connections once the client's own retries ran out,
    a rate-limit 403 that did not reset in time, and anything else (a warehouse that went away).
    """
    if isinstance(exc, ICRAPIError):
        return not exc.transient
    return isinstance(exc, PERMANENT_ERRORS)
