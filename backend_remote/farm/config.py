"""What the server and the workers share: the Celery app, Redis connections and key names.

The queue URL is a Redis URL, `redis://[:PASSWORD@]HOST:PORT/N` or, with TLS,
`rediss://:PASSWORD@HOST:PORT/N?ssl_cert_reqs=required[&ssl_ca_certs=/path/ca.pem]`; Celery and
redis-py both read it as it is.

Celery's own guarantees carry the delivery: a job is acknowledged only when it has ended
(acks_late), a job whose pool process dies is put back at once (task_reject_on_worker_lost), a
worker holds one job at a time (prefetch 1), and a job whose whole worker vanished (machine lost)
becomes visible again after the visibility timeout. That timeout must be longer than the longest
job, or a running job would be handed to a second worker as well (harmless for the result, which is
published once, but it wastes a GPU).

Environment (the same on the server and every worker):
  GEN3D_FARM_VISIBILITY_S        visibility timeout, default 7200 (2 h; jobs stop at --job-timeout, 1 h)
  GEN3D_FARM_RESTORE_INTERVAL_S  how often workers look for jobs whose visibility timeout passed (10)
  GEN3D_FARM_OUTCOME_TTL_S       how long Redis keeps a job's outcome record (7 days)
  GEN3D_FARM_KILL_GRACE_S        how long past --job-timeout a job that ignores its cancel flag (a wedged
                                 kernel) may run before Celery kills its pool process, and the server
                                 marks it TIMED_OUT (120)
"""

import os
from urllib.parse import urlsplit

from celery import Celery

TASK_NAME = "gen3d.run_job"
QUEUE_NAME = "gen3d"
EVENTS_STREAM = "gen3d:events"
EVENTS_GROUP = "gen3d-server"
EVENTS_MAXLEN = 100000            # approximate; outcomes also live in their own keys


def outcome_key(job_id):
    return "gen3d:outcome:%s" % job_id


def cancel_key(job_id):
    return "gen3d:cancel:%s" % job_id


def publish_lock_key(job_id):
    return "gen3d:publishing:%s" % job_id


def running_key(job_id):
    return "gen3d:running:%s" % job_id


def worker_key(name):
    return "gen3d:worker:%s" % name


WORKER_KEY_PATTERN = "gen3d:worker:*"


def _float_env(name, default):
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else float(default)


def visibility_timeout_s():
    return _float_env("GEN3D_FARM_VISIBILITY_S", 7200)


def restore_interval_s():
    return _float_env("GEN3D_FARM_RESTORE_INTERVAL_S", 10)


def kill_grace_s():
    return _float_env("GEN3D_FARM_KILL_GRACE_S", 120)


def outcome_ttl_s():
    return int(_float_env("GEN3D_FARM_OUTCOME_TTL_S", 7 * 24 * 3600))


def check_queue_url(url):
    """Refuse anything but a Redis URL up front, with a message that says what to write."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("--queue %r is not a Redis URL; write redis://HOST:PORT/N, or rediss://:PASSWORD@HOST:PORT/N"
                         "?ssl_cert_reqs=required for TLS" % (url,))
    if parts.scheme == "rediss" and "ssl_cert_reqs" not in parts.query:
        raise ValueError("a rediss:// queue URL needs ?ssl_cert_reqs=required (and ssl_ca_certs=/path/ca.pem for a "
                         "private CA), so the server's certificate is checked")
    return url


def redis_client(url):
    """A redis-py client for our own keys and the events stream. Commands time out instead of hanging
    on a broker that vanished without closing the connection."""
    import redis

    return redis.Redis.from_url(check_queue_url(url), socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=15, retry_on_timeout=True, decode_responses=True)


def celery_app(url):
    """The Celery app; `serve --queue` only sends with it, `worker` consumes."""
    app = Celery("gen3d", broker=check_queue_url(url), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE_NAME,
        task_serializer="json", accept_content=["json"],
        task_ignore_result=True,              # outcomes go through our own keys and stream
        worker_send_task_events=False,
        # A Redis blip must not stop GPU work that is half done: the job keeps running and its result
        # is published once whatever Celery does with the message meanwhile.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s(),
            "unacked_restore_interval": restore_interval_s(),
            "unacked_restore_throttle": 1,
            "socket_timeout": 10, "socket_connect_timeout": 5, "retry_on_timeout": True,
            "health_check_interval": 15,
        },
        worker_hijack_root_logger=False,
    )
    return app
