"""``docker``, ``kubectl`` and ``crictl`` stand-ins that point ``observe.sh`` at a running netlab lab.

Only the command forms ``observe.sh`` uses are understood; anything else exits 64 with the
arguments it did not understand, so a script change that needs a real cluster shows up as a
failure, not as a quiet pass. What they map (from the JSON file named by ``NETLAB_ADAPTER_MAP``):

* ``docker exec NODE CMD...``  → ``ip netns exec <node netns> CMD...`` (a kind node is a netns here)
* ``crictl pods ... --name ^P$`` → ``P``; ``crictl inspectp ... P`` → the pid of a process whose
  main thread is in P's netns (a sleeping process is started there if none is; its pid is
  appended to ``<map>.pids`` for the test to stop)
* ``kubectl get nodes|pods -l ...`` → names; ``kubectl logs ztunnel-N`` → the lab's access log of
  that ztunnel; ``kubectl exec deploy/C -- CMD...`` → ``ip netns exec <pod netns> CMD...``

The network namespaces, rules, sockets, processes and traffic behind them are the lab's own:
nothing here invents kernel state. It is not a Kubernetes cluster and does not claim to be one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _fail(tool: str, args: list[str]) -> None:
    print(f"{tool} adapter: not understood: {args}", file=sys.stderr)
    sys.exit(64)


def _opt(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _netns_pid(netns: str, pidfile: str) -> int:
    inode = os.stat(f"/run/netns/{netns}").st_ino
    for d in sorted(os.listdir("/proc"), key=lambda x: int(x) if x.isdigit() else 0):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == inode:
                    return int(d)
            except OSError:
                continue
    p = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "600"], start_new_session=True)
    with open(pidfile, "a") as f:
        f.write(f"{p.pid}\n")
    return p.pid


def main(tool: str, args: list[str]) -> None:
    path = os.environ["NETLAB_ADAPTER_MAP"]
    with open(path) as f:
        m = json.load(f)
    netns = {**m["nodes"], **m["pods"], **{f"ztunnel-{n}": ns for n, ns in m["ztunnels"].items()}}
    if tool == "docker":
        if len(args) < 3 or args[0] != "exec" or args[1] not in m["nodes"]:
            _fail(tool, args)
        os.execvp("ip", ["ip", "netns", "exec", m["nodes"][args[1]], *args[2:]])
    if tool == "crictl":
        if args[:1] == ["pods"]:
            print((_opt(args, "--name") or "").strip("^$"))
            return
        if args[:1] == ["inspectp"] and args[-1] in netns:
            print(_netns_pid(netns[args[-1]], path + ".pids"))
            return
        _fail(tool, args)
    # kubectl: --context CTX and -n NS may come anywhere before the verb
    rest, ns = [], None
    i = 0
    while i < len(args):
        if args[i] == "--":  # the command run in the pod is not kubectl's to parse
            rest += args[i:]
            break
        if args[i] in ("--context", "-n"):
            ns = args[i + 1] if args[i] == "-n" else ns
            i += 2
            continue
        rest.append(args[i])
        i += 1
    label, out = _opt(rest, "-l"), _opt(rest, "-o") or ""
    if rest[:2] == ["get", "nodes"]:
        if label and label.startswith("netlab/node="):
            print(label.split("=", 1)[1] if label.split("=", 1)[1] in m["nodes"] else "", end="")
        elif "--no-headers" in rest:
            print("\n".join(f"{n} Ready <none> 1m netlab-adapter" for n in m["nodes"]))
        elif "kubeletVersion" in out:
            print("netlab-adapter", end="")
        elif "kernelVersion" in out:
            print(os.uname().release, end="")
        else:
            _fail(tool, args)
        return
    if rest[:2] == ["get", "pods"] and label:
        if label == "app=ztunnel":
            node = (_opt(rest, "--field-selector") or "").removeprefix("spec.nodeName=")
            print(f"ztunnel-{node}" if node in m["ztunnels"] else "", end="")
        elif label.startswith("netlab/pod="):
            pod = label.split("=", 1)[1]
            print(pod if pod in m["pods"] else "", end="")
        else:
            _fail(tool, args)
        return
    if rest[:1] == ["logs"] and rest[1:2] and rest[1] in m["logs"]:
        with open(m["logs"][rest[1]]) as f:
            sys.stdout.write(f.read())
        return
    if rest[:1] == ["exec"] and rest[1].startswith("deploy/") and "--" in rest:
        pod = rest[1].removeprefix("deploy/")
        cmd = rest[rest.index("--") + 1:]
        if pod in m["pods"]:
            os.execvp("ip", ["ip", "netns", "exec", m["pods"][pod], *cmd])
    _fail(tool, args)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
