"""Imported by Python at start-up in the farm worker of the hard-limit test (its PYTHONPATH starts
here): a job whose seed is STUCK_SEED hangs in the pipeline without ever looking at its cancel flag,
as a wedged GPU kernel would. Every other job runs as usual. The patch is made in the Celery parent,
so every pool process it forks, the replacement after a kill included, has it."""

import time

STUCK_SEED = 4242


def _patch():
    from backend_local.pipeline import Pipeline

    run = Pipeline.run

    def run_or_hang(self, request, *args, **kwargs):
        seed = request.get("seed") if isinstance(request, dict) else getattr(request, "seed", None)
        if seed == STUCK_SEED:
            while True:                   # deaf to cancel: only a kill ends this
                time.sleep(0.5)
        return run(self, request, *args, **kwargs)

    Pipeline.run = run_or_hang


_patch()
