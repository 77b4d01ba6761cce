"""sandbox-transport-http: the contract's REST + SSE routes, server and client."""
