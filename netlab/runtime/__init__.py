"""Runtime layer: the long-lived processes of a lab and the lifecycle that runs them.

Workloads in pods, one ztunnel per node, the in-pod CNI agent, the userspace Geneve
forwarder, all started, watched, restarted and stopped by one supervisor per lab. A process
that must live in a lab netns enters it from its own (forked) thread; nothing here changes
the root network namespace.
"""
