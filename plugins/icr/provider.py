"""Provider info for the ``apache_airflow_provider`` entry point.

Airflow 3.3 builds the connection form from this dict (``ui-field-behaviour`` and
``conn-fields``), without importing the hook: the hook's ``get_ui_field_behaviour()`` is only
a fallback that Airflow skips (and deprecates) once these keys exist. Keep this module free of
heavy imports: every Airflow process loads it at start-up, before the config is ready.
"""

from __future__ import annotations

from typing import Any

from icr import __version__

CONN_TYPE = "icr"
HOOK_CLASS_NAME = "icr.hooks.ICRHook"
HOOK_NAME = "ICR App"

DEFAULT_API_VERSION = "2023-06-16"
DEFAULT_PAGE_SIZE = 100
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 30
DEFAULT_CONCURRENCY = 1
DEFAULT_MAX_RETRY_WAIT_S = 300.0
#: seconds a request keeps retrying transient failures (429, 5xx, timeouts, resets), counted
#: from its first attempt: rides out a 30-60 s API outage inside the task.
DEFAULT_RETRY_BUDGET_S = 120.0
#: [Assumed] the largest ``limit`` ICR's docs show working; ICR documents no maximum.
DEFAULT_MAX_PAGE_SIZE = 100
#: cap on the bytes of one API answer (a 100-record page is ~150 KB; a record may hold 1 MB).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

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

# Extras (stored in Connection.extra). ``format: password`` is what Airflow 3.3 reads as
# "sensitive" (ProvidersManager._add_widgets), so the passphrase is masked in the form.
#
# ``key_source`` must not contain "private_key": Airflow redacts such extras to '***' in the
# edit form, and a select whose value is '***' shows nothing.
KEY_SOURCE_PEM = "pem"
KEY_SOURCE_FILE = "file"
KEY_SOURCES = (KEY_SOURCE_PEM, KEY_SOURCE_FILE)

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "key_source": {
        "label": "Key source",
        "description": "Which private key signs the app's JWTs. Airflow keeps a stored PEM when "
        "the Private key (PEM) field is cleared, so choose 'Private key file' to switch to the file. "
        "Empty: the PEM when one is stored, else the file.",
        "schema": {
            "type": ["string", "null"],
            "enum": [None, *KEY_SOURCES],
            "values_display": {
                "null": "Automatic (the PEM when one is stored, else the file)",
                KEY_SOURCE_PEM: "PEM pasted in the Private key (PEM) field",
                KEY_SOURCE_FILE: "Private key file",
            },
        },
    },
    "private_key_path": {
        "label": "Private key file",
        "description": "Path to the app's PEM private key, readable on the workers and on the "
        "API server (Test runs there). Used when Key source is 'Private key file', or when Key "
        "source is empty and no PEM is stored.",
        "schema": {"type": ["string", "null"]},
    },
    "private_key_passphrase": {
        "label": "Private key passphrase",
        "description": "Only for an encrypted PEM key.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "api_version": {
        "label": "API version",
        "description": "Sent as X-ICR-Api-Version; pins ICR's behaviour.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_API_VERSION},
    },
    "page_size": {
        "label": "Page size",
        "description": "limit= for GET /app/installations (ICR documents no maximum).",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_PAGE_SIZE, "minimum": 1},
    },
    "max_page_size": {
        "label": "Maximum page size",
        "description": "The largest limit= ICR accepts; page sizes above it are refused before the run. "
        "If ICR answers 400 'limit must not be greater than N', the run retries once with N.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_MAX_PAGE_SIZE, "minimum": 1},
    },
    "concurrency": {
        "label": "Concurrent page requests",
        "description": "Pages fetched in parallel once the page count is known; 1 = sequential.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_CONCURRENCY, "minimum": 1},
    },
    "timeout": {
        "label": "Request timeout (s)",
        "description": "Total time allowed for one HTTP request: connecting, and reading the whole answer.",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT_S, "minimum": 0},
    },
    "max_retries": {
        "label": "Max attempts per request",
        "description": "Attempts for transient failures (429, 5xx, timeouts, resets).",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_MAX_RETRIES, "minimum": 1},
    },
    "max_retry_wait": {
        "label": "Max total retry wait (s)",
        "description": "Give up on a request once its retries have waited this long.",
        "schema": {"type": ["number", "null"], "default": DEFAULT_MAX_RETRY_WAIT_S, "minimum": 0},
    },
    "retry_budget": {
        "label": "Retry time budget (s)",
        "description": "How long one request keeps retrying 429, 5xx, timeouts and dropped connections "
        "(exponential backoff with jitter) before the task fails.",
        "schema": {"type": ["number", "null"], "default": DEFAULT_RETRY_BUDGET_S, "minimum": 0},
    },
    "allow_insecure_http": {
        "label": "Allow plain HTTP",
        "description": "Allow an http:// base URL to a non-loopback host (tests only).",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}


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
                "conn-fields": {name: _copy(field) for name, field in CONN_FIELDS.items()},
            }
        ],
    }


def _copy(field: dict[str, Any]) -> dict[str, Any]:
    """Deep-enough copy: ProvidersManager mutates nothing today, but callers may."""
    out = dict(field)
    out["schema"] = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                     for k, v in field["schema"].items()}
    return out
