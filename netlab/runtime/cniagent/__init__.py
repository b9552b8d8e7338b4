"""The in-pod CNI agent of one lab node (istio-cni's node agent) and its side of ZDS.

``agent`` writes each enrolled pod's redirection rules inside the pod's netns and hands the
netns to ztunnel; ``zds_server`` is the ZDS listener ztunnel connects to.
"""
