"""Cap'n Web RPC transport of the sandbox runtime (see plugin.py)."""
