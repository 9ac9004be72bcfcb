"""Farm mode: the server puts jobs on Celery (Redis broker) and GPU machines run them.

  config.py     the Celery app and Redis settings both sides share, and the Redis key names
  results.py    worker side: events to the server, the one-time publication of a result
  worker.py     `python -m backend_remote worker`: one Celery worker (one pool process) per GPU
  scheduler.py  server side: dispatch to Celery, events into SQLite, cancel, timeouts
"""
