"""`python -m alignlab` and the `alignlab` console script (pyproject.toml points it here, not at alignlab.cli).

Importing alignlab.cli takes about a quarter of a second (typer, pydantic and the commands' modules); a Ctrl-C in
it printed a 54-line import traceback. Caught here, around the import, it ends as a later one does: one line and
exit code 130."""

import sys


def entry() -> None:
    try:
        from alignlab.cli import entry as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()


if __name__ == "__main__":
    entry()
