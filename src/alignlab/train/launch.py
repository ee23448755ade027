"""`python -m alignlab.train.launch TORCHRUN_ARGS`: torchrun for `alignlab train --processes N`, its ending in one line.

It runs torchrun's own launcher (``torch.distributed.run.run``); what differs is the ending. torchrun's entry point
ends a run whose process failed, or that was stopped, with a page of traceback (``ChildFailedError``,
``SignalException``) after the workers have said what went wrong; here it is one line naming the process and how
it ended, and the exit code: 1 for a failure, 128 + the signal for a stop.
"""

from __future__ import annotations

import logging
import os
import sys


def _cause(err) -> tuple:
    """(rank, failure) of the process that failed on its own: not one that stopped because a peer died (exit code
    PEER_STOPPED) or that torchrun stopped (a signal, or 128 + one), which may well have ended first."""
    from alignlab.errors import PEER_STOPPED

    stopped = (PEER_STOPPED, 128 + 2, 128 + 15, -2, -15)  # SIGINT/SIGTERM are torchrun's; -9 (OOM), -11 are not
    own = {r: f for r, f in err.failures.items() if f.exitcode not in stopped}
    if not own:
        return err.get_first_failure()
    rank = min(own, key=lambda r: own[r].timestamp)
    return rank, own[rank]


def main(argv: list[str]) -> int:
    os.environ.setdefault("LOGLEVEL", "ERROR")  # torch.distributed.elastic's loggers take their level from it
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure summary: said below
    args = parse_args(argv)
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = _cause(err)
        how = (f"was killed by signal {-failure.exitcode}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        print(f"error: process {rank} of {args.nproc_per_node} {how}, so the run stopped (its own message, if it "
              "wrote one, is above)", file=sys.stderr)
        return 1
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
