"""``python -m netlab.runtime.ztunnel --config PATH``: see :func:`netlab.runtime.ztunnel.server.main`."""

import sys

from netlab.runtime.ztunnel.server import main

sys.exit(main())
