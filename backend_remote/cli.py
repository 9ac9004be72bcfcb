"""Command line: `python -m backend_remote serve ...` (the self-hosted server) and
`python -m backend_remote worker ...` (a farm worker, with `serve --queue`).

The RunPod worker has its own entry point, `python -m backend_remote.handler`, because RunPod's SDK
reads its own options from the command line.
"""

import argparse
import os
import sys

from shared.errors import Gen3DError

QUEUE_ENV = "GEN3D_QUEUE_URL"


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m backend_remote", description="Gen3D remote backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="self-hosted RunPod-compatible server")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; put HTTPS in front before exposing it)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key-file", required=True, metavar="FILE", help="API keys, one per line")
    serve.add_argument("--storage", default=None, metavar="DIR|s3://bucket/prefix",
                       help="where results go (default DATA_DIR/results; s3:// reads endpoint and keys from the "
                            "environment, see backend_remote/DEPLOY.md)")
    serve.add_argument("--data-dir", default="~/.gen3d/server", metavar="DIR",
                       help="job database, work folder and URL-signing key (default ~/.gen3d/server)")
    serve.add_argument("--device", default="auto",
                       help="device(s) to run jobs on, one job at a time each: auto, cpu, cuda, or cuda:0,cuda:1")
    serve.add_argument("--retention-hours", type=float, default=24.0, help="keep results this long (default 24)")
    serve.add_argument("--url-expiry", type=int, default=3600, metavar="SECONDS",
                       help="lifetime of download URLs handed out by /status (default 3600)")
    serve.add_argument("--public-url", default=None,
                       help="base URL clients reach this server at, when behind a proxy (default: the address the "
                            "client connected to; the Host header is not trusted)")
    serve.add_argument("--job-timeout", type=int, default=3600, metavar="SECONDS",
                       help="a running job is stopped as TIMED_OUT after this long (default 3600)")
    serve.add_argument("--max-jobs-per-key", type=int, default=16, metavar="N",
                       help="jobs one API key may have queued or running at once (default 16)")
    serve.add_argument("--max-queued-mb", type=int, default=4096, metavar="MB",
                       help="inline images waiting on disk, all keys together (default 4096; one key: an eighth)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.add_argument("--queue", default=os.environ.get(QUEUE_ENV) or None, metavar="redis://HOST:PORT/N",
                       help="farm mode: put jobs on this Redis queue for `worker` processes instead of running "
                            "them here (default $%s; needs --storage s3://...; see backend_remote/DEPLOY.md)"
                            % QUEUE_ENV)
    worker = sub.add_parser("worker", help="farm worker: runs queued jobs on one device (one per GPU)")
    worker.add_argument("--queue", default=os.environ.get(QUEUE_ENV) or None, required=not os.environ.get(QUEUE_ENV),
                        metavar="redis://HOST:PORT/N",
                        help="the server's --queue (default $%s, which keeps a password out of `ps`)" % QUEUE_ENV)
    worker.add_argument("--storage", required=True, metavar="s3://bucket/prefix",
                        help="the server's --storage (endpoint and keys from the environment)")
    worker.add_argument("--device", default="auto", help="one device: auto, cpu, cuda or cuda:N (default auto)")
    worker.add_argument("--job-timeout", type=float, default=3600, metavar="SECONDS",
                        help="stop a job as TIMED_OUT after this long (default 3600)")
    worker.add_argument("--name", default=None, help="worker name (default gen3d-<device>@<hostname>)")
    worker.add_argument("--work-dir", default=None, metavar="DIR", help="scratch folder (default: a temp folder)")
    worker.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return parser


def cmd_serve(args):
    from .http_server import serve
    from .scheduler import Quotas
    from .server import build_state, create_app

    try:
        state = build_state(args.api_key_file, args.data_dir, args.storage,
                            devices=[d.strip() for d in args.device.split(",") if d.strip()],
                            retention_s=args.retention_hours * 3600, url_expiry_s=args.url_expiry,
                            public_url=args.public_url, job_timeout_s=args.job_timeout, queue_url=args.queue,
                            quotas=Quotas(args.max_jobs_per_key, args.max_queued_mb * 2 ** 20 // 8,
                                          args.max_queued_mb * 2 ** 20))
    except (Gen3DError, ValueError) as exc:
        print("error: %s" % (exc.message if isinstance(exc, Gen3DError) else exc), file=sys.stderr)
        return 2
    serve(create_app(state), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from .farm.worker import main as worker_main
        return worker_main(args)
    return cmd_serve(args)
