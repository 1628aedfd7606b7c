"""``[core] hostname_callable`` of the e2e Celery worker only.

The e2e deployment runs every process on one machine, so the real hostname cannot tell which
process ran a task. The worker alone gets ``AIRFLOW__CORE__HOSTNAME_CALLABLE`` pointing here and a
unique name in ``ICR_E2E_WORKER_HOSTNAME``: a task instance whose ``hostname`` is that name ran
in a task process supervised by that Celery worker.
"""

import os
import socket


def hostname() -> str:
    return os.environ.get("ICR_E2E_WORKER_HOSTNAME") or socket.getfqdn()
