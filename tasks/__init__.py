"""What the API and the workers share: the Celery app factory, tasks, the Tebra gateway, events, keys."""
