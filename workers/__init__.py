"""The worker process: Celery entry point, signals, beat schedule, the audit-log writer."""
