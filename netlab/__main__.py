"""``python -m netlab`` and the ``netlab`` script: the CLI.

Signals are set up before the CLI is imported: a Ctrl-C, SIGTERM or SIGHUP while it is still
importing (before its error boundary exists) is one line and exit 128 + n, not a traceback.
"""

import signal
import sys


def run() -> None:
    # imported here, not at the top: the signal handlers go in before the CLI's import starts
    from netlab.lab import interrupt

    interrupt.install_cli_defaults()
    try:
        # the CLI's import (typer, rich, pydantic) is what a signal may interrupt: inside the try
        from netlab.cli.main import main

        main()
    except KeyboardInterrupt as e:  # outside any command's boundary (imports, argument parsing)
        signum = getattr(e, "signum", signal.SIGINT)
        sys.stderr.write("netlab: interrupted\n")
        raise SystemExit(128 + signum) from None


if __name__ == "__main__":
    run()
