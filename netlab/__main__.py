"""``python -m netlab``: the CLI. A Ctrl-C while the CLI is still importing (before its error
boundary exists) is one line and exit 130, not a traceback."""

import sys

try:
    from netlab.cli.main import main
except KeyboardInterrupt:
    sys.stderr.write("netlab: interrupted\n")
    raise SystemExit(130) from None

main()
