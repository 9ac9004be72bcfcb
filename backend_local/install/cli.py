"""The `install` subcommand: arguments, progress mode, exit codes (0 installed and available, 2 failed)."""

import signal
import sys

from shared.errors import CANCELLED, INTERNAL, Gen3DError

from .progress import Reporter
from .spec import ENGINES

EXIT_FAILED = 2


def add_parser(sub):
    parser = sub.add_parser("install", help="install an engine: packages, source, native extensions, weights")
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("--weights-dir", metavar="DIR", help="where the weights go (default ~/.gen3d/weights, or "
                        "the folder of an earlier install)")
    parser.add_argument("--source", metavar="DIR", help="an existing checkout of the engine's upstream repository")
    parser.add_argument("--json-progress", action="store_true",
                        help="one JSON object per line on stdout (progress, then done or error)")
    return parser


def _cancelled(_signum, _frame):
    raise KeyboardInterrupt


def main(args):
    from .runner import install

    reporter = Reporter(json_lines=args.json_progress)
    signal.signal(signal.SIGTERM, _cancelled)          # the add-on's cancel
    try:
        row, rows, _entry = install(args.engine, reporter, weights_dir=args.weights_dir, source=args.source)
    except Gen3DError as exc:
        reporter.error(exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        reporter.error(Gen3DError(CANCELLED, "The install was cancelled; run it again to continue (finished files are "
                                  "kept).", stage=None, retryable=True))
        return EXIT_FAILED
    except Exception as exc:              # never a traceback for the user; the type says where to look
        reporter.error(Gen3DError(INTERNAL, "The install failed unexpectedly (%s: %s). Run it again; if it repeats, "
                                  "report this message." % (type(exc).__name__, exc), retryable=True))
        return EXIT_FAILED
    reporter.done(args.engine, row, rows)
    if not row.get("available"):
        print("%s was installed but is not available yet: %s" % (args.engine, row.get("reason")), file=sys.stderr)
        return EXIT_FAILED
    return 0
