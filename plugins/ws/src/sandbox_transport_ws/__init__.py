"""WebSocket transport of the sandbox runtime (see plugin.py)."""
