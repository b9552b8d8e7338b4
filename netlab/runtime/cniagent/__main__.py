"""``python -m netlab.runtime.cniagent``: the agent process the lab supervisor starts per node."""

import sys

from netlab.runtime.cniagent.agent import main

sys.exit(main())
