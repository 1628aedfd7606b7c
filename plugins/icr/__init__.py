"""ICR installation sync: an Airflow provider that reads ICR App installations into a warehouse.

Data flows one way: API pages (``client``/``paging``) -> records -> a typed DataFrame chunk
(``normalize``) -> staging table -> one set-based merge (``warehouse``). ``sync`` ties one run
together and is what the DAG tasks, the tests and the benchmark all call.
"""

from __future__ import annotations

__version__ = "0.1.0"
