"""Run several ``lightning-siamese`` commands in one process of a distributed launch: the same
process group serves them all (``torchrun`` sets the environment, so Lightning starts no process
of its own). ``python distributed_session.py PLAN.json``: the plan is a list of argument lists.

Launched by tests/test_distributed.py (with ``tests/`` on PYTHONPATH), one launch for many checks.
"""

from __future__ import annotations

import json
import sys

from lightning_siamese.cli.main import main


def run(plan_file: str) -> int:
    import wandb

    with open(plan_file, encoding="utf-8") as handle:
        plan = json.load(handle)
    for args in plan:
        code = main(args)
        if wandb.run is not None:  # a process exit would close it: the next command's is new
            wandb.finish()
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
