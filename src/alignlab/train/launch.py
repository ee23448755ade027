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
        rank, failure = err.get_first_failure()  # the root cause: the others were stopped because of it
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
