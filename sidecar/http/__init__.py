"""The sidecar's HTTP face: its own API and the pass-through to opencode.

A request meets the server and its connection guard (server.py, protocol_guard.py, connections.py),
then the guards (guards.py: Host and Origin, framing, the key, body limits), then either a route
of the sidecar's own (routes.py, answering from the catalog, pages.py, or asking the resolver) or
the pass-through (passthrough.py), which resolves a model it carries through the same resolver
and forwards the rest to opencode. What the routes need of the rest of the sidecar is named in
view.py; the supervisor builds it.
"""
