"""ICR webhooks: a receiver that writes deliveries into the warehouse's inbox, and the inbox.

``python -m icr.webhooks`` runs the receiver (docs/webhooks.md). Modules, one job each:

- :mod:`.settings`  the receiver's settings and their defaults;
- :mod:`.signature` the ``x-icr-signature-256`` HMAC and the delivery id;
- :mod:`.delivery`  checks one delivery's body and signature;
- :mod:`.secret`    the webhook secret from the Airflow connection ``icr_webhook``;
- :mod:`.inbox`     the ``icr_webhook_inbox`` table: insert, pending, mark;
- :mod:`.notify`    the Redis pub/sub notification after a delivery is stored;
- :mod:`.receiver`  the ASGI app (Starlette) tying them together.
"""
