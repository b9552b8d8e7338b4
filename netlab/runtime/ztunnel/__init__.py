"""ztunnel: netlab's userspace zero-trust tunnel (the L4 half of Istio ambient's ztunnel).

It does what ztunnel does for TCP: takes connections redirected to it (outbound 15001,
inbound plaintext 15006, inbound HBONE 15008), carries mesh traffic as HBONE (HTTP/2
CONNECT over mutual TLS with SPIFFE identities), enforces L4 authorization policies, and
writes one access-log line per connection in ztunnel's exact format.

Modules, sans-IO cores first:

* ``config``    - the process configuration (JSON written by the lab).
* ``certs``     - lab PKI (CA + SPIFFE X.509-SVIDs) with ``cryptography``.
* ``registry``  - workloads, services, policies loaded from the lab's JSON file.
* ``accesslog`` - the access-log lines in ztunnel's format: opened, failed, complete.
* ``hbone``     - HBONE CONNECT client/server on top of ``h2`` (sans-IO): bytes in, events out.
* ``tls``       - SSLContexts per identity (in-memory SVIDs renewed at half-life) and the
  SPIFFE SAN check after the handshake.
* ``sockets``   - socket factories: node-routing (transparent, spoofed source) and in-pod
  (sockets created inside the pod netns, SO_MARK 0x539).
* ``relay``     - push-driven byte relays between two ends (TCP, HBONE stream), splice(2).
* ``h2conn``    - HTTP/2 connections carrying HBONE: stream ends, the driver, the pool.
* ``metrics``   - the Prometheus counters served on 15020.
* ``proxy``     - the three proxies (15001, 15006, 15008): one task per connection.
* ``listeners`` - a listener set: the three listening sockets of one scope (node or pod).
* ``watch``     - inotify watch on the registry file, so a change is reloaded at once.
* ``podmanager``- in-pod mode: per-pod listener sets, driven by the ZDS client.
* ``zds_client``- ztunnel's side of ZDS: receives pods (netns fds) from the CNI agent.
* ``server``    - the process: listeners, metrics (15020), readiness (15021), reload.

It never touches the root network namespace itself: it only opens sockets, in the netns it
was started in or, in in-pod mode, in the pod netns handed to it.
"""
