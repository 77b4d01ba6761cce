"""The Kubernetes agent-sandbox runtime API (sandboxd) as a transport of the sandbox runtime.

Two listeners of its own beside the server's port: gRPC (``process.v1.ProcessService``, and this
project's ``sandbox.v1`` Watch and Jupyter services) and REST (``/v1/files``, ``/v1/health``,
``/v1/metadata``). Every call goes to the services through the registry; this package maps
messages and status codes, and holds no process or file logic.
"""
