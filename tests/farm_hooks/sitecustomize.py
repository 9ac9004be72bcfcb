"""Imported by Python at start-up in the test farm's workers (their PYTHONPATH starts here), so that
tests about a job's timing do not race the CPU: a tiny job can finish in under a second on a fast
machine, before a test's cancel reaches it.

- A job whose seed is STUCK_SEED hangs in the pipeline without ever looking at its cancel flag, as a
  wedged GPU kernel would: only a kill ends it.
- A job whose seed is in HOLD_S waits up to that many seconds before its pipeline starts, listening
  to its cancel flag (as every real stage does); cancelled, it stops as CANCELLED, otherwise it then
  runs as usual. The cancel test holds its jobs long; the kill tests hold theirs a little, so the
  kill lands mid-job (each delivery holds again).

Every other job runs as usual. The patch is made in the Celery parent, so every pool process it
forks, the replacement after a kill included, has it."""

import time

STUCK_SEED = 4242
HOLD_S = {**{seed: 30.0 for seed in range(100, 110)}, 400: 8.0, 500: 8.0}


def _seed(request):
    return request.get("seed") if isinstance(request, dict) else getattr(request, "seed", None)


def _patch():
    from backend_local.pipeline import Pipeline

    run = Pipeline.run

    def run_with_hooks(self, request, *args, **kwargs):
        seed = _seed(request)
        if seed == STUCK_SEED:
            while True:                   # deaf to cancel
                time.sleep(0.5)
        cancel = kwargs.get("cancel")
        if seed in HOLD_S and cancel is not None:
            cancel.wait(HOLD_S[seed])           # the pipeline's first stage check then sees a set flag
        return run(self, request, *args, **kwargs)

    Pipeline.run = run_with_hooks


_patch()
