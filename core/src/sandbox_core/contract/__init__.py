"""The contract: the container runtime API of the Cloudflare Sandbox SDK 0.12.x, as this runtime
speaks it.

Beside the mechanism (the rest of ``sandbox_core``: plugin manager, hookspecs, config, registry,
router, edge, server, error machinery), which knows no route, model or client of any API:

* :mod:`.routes`: the contract's http routes and the operation each calls (the http and ws
  transports serve them through the core's router; their clients build requests from them);
* :mod:`.models`: the wire models of its requests, results and events, which services return;
* :mod:`.client`: the Python ``Sandbox`` facade over any transport that speaks it;
* :mod:`.conformance`: the suite a transport of this contract must pass.

A new service adds its models, routes, client facade and conformance mixin here; a new API
personality (another contract) would sit beside this package, not inside the mechanism.
"""
