"""Apply layer: the only code that changes the kernel.

It turns a plan into network namespaces, links, addresses, routes, rules, sysctls, ipsets
and iptables rules (pyroute2 netlink sockets opened per netns; atomic iptables-restore), and
removes them again. Idempotent: existing objects are kept (EEXIST) or replaced. It never
touches the root network namespace: every socket it opens is bound to a lab netns.
"""
