"""The Tebra gateway: the zeep client, error classification, the shared throttle, typed calls, mapping.

Nothing here knows about Celery: tasks wrap :class:`~tasks.tebra.gateway.TebraGateway` and turn its
classified errors (:mod:`tasks.tebra.errors`) into retries or terminal statuses.
"""
