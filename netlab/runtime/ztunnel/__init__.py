"""ztunnel: netlab's userspace zero-trust tunnel (the L4 half of Istio ambient's ztunnel).

It does what ztunnel does for TCP: takes connections redirected to it (outbound 15001,
inbound plaintext 15006, inbound HBONE 15008), carries mesh traffic as HBONE (HTTP/2
CONNECT over mutual TLS with SPIFFE identities), enforces L4 authorization policies, and
writes one access-log line per connection in ztunnel's exact format.

Modules, sans-IO cores first:

* ``certs``     - lab PKI (CA + SPIFFE X.509-SVIDs) with ``cryptography``.
* ``registry``  - workloads, services, policies loaded from the lab's JSON file.
* ``accesslog`` - the access-log line format (section C of the reference).
* ``hbone``     - HBONE CONNECT client/server on top of ``h2``: bytes in, events out.
* ``tls``       - SSLContexts per identity and the SPIFFE SAN check after the handshake.
* ``sockets``   - socket factories: node-routing (transparent, spoofed source) and in-pod
  (sockets created inside the pod netns, SO_MARK 0x539).
* ``proxy``     - the asyncio drivers: one per connection, relays, the HTTP/2 pool.
* ``server``    - the process: listeners, metrics (15020), readiness (15021), reload.
* ``podmanager``- in-pod mode: per-pod listener sets driven by the ZDS client.

It never touches the root network namespace itself: it only opens sockets, in the netns it
was started in or, in in-pod mode, in the pod netns handed to it.
"""
