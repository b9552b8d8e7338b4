"""Teaching labs: numbered exercises a learner (or CI) runs against a live lab.

A teaching lab is data: a topology and design, then steps. Each step is a command to type,
what to look at in its output, and a check that reads the live lab (rules, counters, ipset
members, listeners, netns fds, access logs, captures) — never the text the step's command
printed, so ``netlab lab check`` knows what was done, not what was typed. This package sits
above ``observe`` (it reads labs with it) and below ``cli``; it changes a lab only through the
lifecycle functions (``up``, ``set_enrollment``) when a lab is started.
"""
