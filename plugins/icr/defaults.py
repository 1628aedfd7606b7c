"""Every default setting, in one place: the connection's extras, the client, the run's guards.

The connection form (:mod:`icr.provider`), the hook's extras parser (:mod:`icr.hooks`), the
client, the pager, the sync settings and the DAG's params all take their defaults from here.
No imports: every Airflow process loads this through :mod:`icr.provider` at start-up.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- the ICR API

DEFAULT_BASE_URL = "https://api.carbonregistry.com"
#: sent as X-ICR-Api-Version; pins ICR's behaviour.
DEFAULT_API_VERSION = "2023-06-16"

# --------------------------------------------------------------------------- connection extras

DEFAULT_PAGE_SIZE = 100
#: [Assumed] the largest ``limit`` ICR's docs show working; ICR documents no maximum.
DEFAULT_MAX_PAGE_SIZE = 100
DEFAULT_CONCURRENCY = 1
#: seconds: the total deadline of one HTTP request (connect, headers and body).
DEFAULT_TIMEOUT_S = 30.0
#: attempts per request for transient failures.
DEFAULT_MAX_RETRIES = 30
#: seconds: the most one request may wait between its attempts, in total.
DEFAULT_MAX_RETRY_WAIT_S = 300.0
#: seconds a request keeps retrying transient failures (429, 5xx, timeouts, resets), counted
#: from its first attempt: rides out a 30-60 s API outage inside the task.
DEFAULT_RETRY_BUDGET_S = 120.0

# --------------------------------------------------------------------------- the client

#: cap on the bytes of one API answer (a 100-record page is ~150 KB; a record may hold 1 MB).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: exponential backoff between attempts: the first wait's scale and the longest single wait (s).
DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_MAX_S = 15.0
#: HTTP connections kept per client (raised to the page concurrency when that is larger).
DEFAULT_POOL_SIZE = 10

#: test_connection() must answer the UI quickly: few attempts, a short total wait and deadline.
TEST_MAX_RETRIES = 2
TEST_MAX_RETRY_WAIT_S = 5.0
TEST_TIMEOUT_S = 15.0

# --------------------------------------------------------------------------- one run (DAG params)

#: the largest share of active installations one run may mark removed.
DEFAULT_MAX_REMOVAL_SHARE = 0.5
#: the largest share of fetched records that may fail validation.
DEFAULT_MAX_REJECT_SHARE = 0.05
#: a run for a past date reuses a complete snapshot this recent instead of reading the API again.
DEFAULT_REUSE_SNAPSHOT_MAX_AGE_HOURS = 6
#: the run timeout (env ICR_SYNC_TIMEOUT_HOURS overrides it in the DAG); a run row older than
#: this that is still "running" is taken for dead.
DEFAULT_RUN_TIMEOUT_HOURS = 3
