"""ztunnel: netlab's userspace zero-trust tunnel (the L4 half of Istio ambient's ztunnel).

It does what ztunnel does for TCP: takes connections redirected to it (outbound 15001,
inbound plaintext 15006, inbound HBONE 15008), carries mesh traffic as HBONE (HTTP/2
CONNECT over mutual TLS with SPIFFE identities), enforces L4 authorization policies, and
writes one access-log line per connection in ztunnel's exact format.

Modules, sans-IO cores first:

* ``config``    - the process configuration (JSON written by the lab).
* ``certs``     - lab PKI (CA + SPIFFE X.509-SVIDs) with ``cryptography``.
* ``registry``  - workloads, services, policies loaded from the lab's JSON file.
* ``accesslog`` - the access-log lines (section C of the reference): opened, failed, complete.
* ``hbone``     - HBONE CONNECT client/server on top of ``h2`` (sans-IO): bytes in, events out.
* ``tls``       - SSLContexts per identity (in-memory SVIDs renewed at half-life) and the
  SPIFFE SAN check after the handshake.
* ``sockets``   - socket factories: node-routing (transparent, spoofed source) and in-pod
  (sockets created inside the pod netns, SO_MARK 0x539).
* ``relay``     - push-driven byte relays between two ends (TCP, HBONE stream), splice(2).
* ``proxy``     - the asyncio drivers: one task per connection, HTTP/2 protocols, the pool.
* ``watch``     - inotify watch on the registry file, so a change is reloaded at once.
* ``server``    - the process: listeners, metrics (15020), readiness (15021), reload.
* ``podmanager``- in-pod mode: per-pod listener sets driven by the ZDS client.

It never touches the root network namespace itself: it only opens sockets, in the netns it
was started in or, in in-pod mode, in the pod netns handed to it.
"""
