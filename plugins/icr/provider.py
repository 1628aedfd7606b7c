"""Provider info for the ``apache_airflow_provider`` entry point.

Airflow 3.3 builds the connection form from this dict (``ui-field-behaviour`` and
``conn-fields``), without importing the hook: the hook's ``get_ui_field_behaviour()`` is only
a fallback that Airflow skips (and deprecates) once these keys exist. Keep this module free of
heavy imports: every Airflow process loads it at start-up, before the config is ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from icr import __version__
from icr.defaults import (
    DEFAULT_API_VERSION,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_PAGE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT_S,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RETRY_BUDGET_S,
    DEFAULT_TIMEOUT_S,
)

CONN_TYPE = "icr"
HOOK_CLASS_NAME = "icr.hooks.ICRHook"
HOOK_NAME = "ICR App"

# Standard connection fields: the form shows host/login/password under ICR's names.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "host": "API base URL",
        "login": "App ID",
        "password": "Private key (PEM)",
    },
    "placeholders": {
        "host": "https://api.carbonregistry.com (empty = production)",
        "login": "d23967cc-dd16-452b-8af4-869965745978",
        "password": "-----BEGIN RSA PRIVATE KEY----- ... (or set Key source to Private key file)",
        "private_key_path": "/opt/airflow/secrets/icr_private_key.pem",
        "api_version": DEFAULT_API_VERSION,
    },
}

# ``key_source`` must not contain "private_key": Airflow redacts such extras to '***' in the
# edit form, and a select whose value is '***' shows nothing.
KEY_SOURCE_PEM = "pem"
KEY_SOURCE_FILE = "file"
KEY_SOURCES = (KEY_SOURCE_PEM, KEY_SOURCE_FILE)

#: JSON-schema type of each kind of extra (always nullable: an empty field is "use the default").
_SCHEMA_TYPES = {"text": "string", "secret": "string", "choice": "string", "int": "integer",
                 "seconds": "number", "bool": "boolean"}


@dataclass(frozen=True)
class ExtraField:
    """One extra of an ``icr`` connection: its widget in the form and how the hook reads it.

    ``kind`` is one of :data:`_SCHEMA_TYPES`: ``text`` and ``secret`` (a string; a secret is
    masked in the form, and kept out of the hook's settings), ``choice`` (one of ``choices``),
    ``int`` (a whole number >= ``minimum``), ``seconds`` (a number >= 0; > 0 with
    ``above_zero``), ``bool``. ``default`` is both the form's default and what the hook uses
    when the extra is absent; ``attr`` names the hook setting when it is not ``name``.
    """

    name: str
    label: str
    description: str
    kind: str
    default: Any = None
    minimum: int | None = None
    above_zero: bool = False
    choices: tuple[str, ...] = ()
    choice_labels: tuple[tuple[str, str], ...] = ()
    attr: str | None = None

    @property
    def setting(self) -> str:
        return self.attr or self.name

    def form(self) -> dict[str, Any]:
        """The ``conn-fields`` entry Airflow builds the widget from (a new dict on every call)."""
        schema: dict[str, Any] = {"type": [_SCHEMA_TYPES[self.kind], "null"]}
        if self.kind == "choice":
            schema["enum"] = [None, *self.choices]
            schema["values_display"] = dict(self.choice_labels)
        if self.kind == "secret":
            schema["format"] = "password"  # what Airflow 3.3 reads as "sensitive": masked in the form
        if self.default is not None:
            schema["default"] = self.default
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        return {"label": self.label, "description": self.description, "schema": schema}


#: The connection's extras (stored in Connection.extra), in the form's order: the one table the
#: form (:data:`CONN_FIELDS`) and the hook's parser (:mod:`icr.hooks`) are both derived from.
EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField(
        "key_source", "Key source",
        "Which private key signs the app's JWTs. Airflow keeps a stored PEM when "
        "the Private key (PEM) field is cleared, so choose 'Private key file' to switch to the file. "
        "Empty: the PEM when one is stored, else the file.",
        "choice", choices=KEY_SOURCES, choice_labels=(
            ("null", "Automatic (the PEM when one is stored, else the file)"),
            (KEY_SOURCE_PEM, "PEM pasted in the Private key (PEM) field"),
            (KEY_SOURCE_FILE, "Private key file"),
        )),
    ExtraField(
        "private_key_path", "Private key file",
        "Path to the app's PEM private key, readable on the workers and on the "
        "API server (Test runs there). Used when Key source is 'Private key file', or when Key "
        "source is empty and no PEM is stored.",
        "text"),
    ExtraField("private_key_passphrase", "Private key passphrase", "Only for an encrypted PEM key.", "secret"),
    ExtraField("api_version", "API version", "Sent as X-ICR-Api-Version; pins ICR's behaviour.",
               "text", default=DEFAULT_API_VERSION),
    ExtraField("page_size", "Page size", "limit= for GET /app/installations (ICR documents no maximum).",
               "int", default=DEFAULT_PAGE_SIZE, minimum=1),
    ExtraField(
        "max_page_size", "Maximum page size",
        "The largest limit= ICR accepts; page sizes above it are refused before the run. "
        "If ICR answers 400 'limit must not be greater than N', the run retries once with N.",
        "int", default=DEFAULT_MAX_PAGE_SIZE, minimum=1),
    ExtraField("concurrency", "Concurrent page requests",
               "Pages fetched in parallel once the page count is known; 1 = sequential.",
               "int", default=DEFAULT_CONCURRENCY, minimum=1),
    ExtraField("timeout", "Request timeout (s)",
               "Total time allowed for one HTTP request: connecting, and reading the whole answer.",
               "seconds", default=DEFAULT_TIMEOUT_S, minimum=0, above_zero=True),
    ExtraField("max_retries", "Max attempts per request",
               "Attempts for transient failures (429, 5xx, timeouts, resets).",
               "int", default=DEFAULT_MAX_RETRIES, minimum=1),
    ExtraField("max_retry_wait", "Max total retry wait (s)",
               "Give up on a request once its retries have waited this long.",
               "seconds", default=DEFAULT_MAX_RETRY_WAIT_S, minimum=0, attr="max_retry_wait_s"),
    ExtraField(
        "retry_budget", "Retry time budget (s)",
        "How long one request keeps retrying 429, 5xx, timeouts and dropped connections "
        "(exponential backoff with jitter) before the task fails.",
        "seconds", default=DEFAULT_RETRY_BUDGET_S, minimum=0, attr="retry_budget_s"),
    ExtraField("allow_insecure_http", "Allow plain HTTP",
               "Allow an http:// base URL to a non-loopback host (tests only).", "bool", default=False),
)
EXTRA_FIELDS_BY_NAME: dict[str, ExtraField] = {f.name: f for f in EXTRA_FIELDS}

#: The form's ``conn-fields``, derived from :data:`EXTRA_FIELDS`.
CONN_FIELDS: dict[str, dict[str, Any]] = {f.name: f.form() for f in EXTRA_FIELDS}


def get_provider_info() -> dict[str, Any]:
    """Describe this package to Airflow's ProvidersManager."""
    return {
        "package-name": "icr-installations-sync",
        "name": "ICR installations sync",
        "description": "Sync International Carbon Registry (ICR) app installations into a "
        "reporting warehouse.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "International Carbon Registry (ICR)",
                "external-doc-url": "https://documentation.carbonregistry.com",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "International Carbon Registry (ICR)",
                "python-modules": ["icr.hooks"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": HOOK_CLASS_NAME,
                "hook-name": HOOK_NAME,
                "connection-type": CONN_TYPE,
                "ui-field-behaviour": {
                    "hidden-fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
                    "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
                    "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
                },
                "conn-fields": {f.name: f.form() for f in EXTRA_FIELDS},
            }
        ],
    }

