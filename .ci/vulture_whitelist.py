"""What vulture (``[tool.vulture]`` in pyproject.toml) would report as unused, and why it is not.

Never run, only read by vulture: each ``_.name`` marks that name as used. Add a name here only
with its reason; dead code is removed instead.
"""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# The contract's error codes: the table the wire speaks (docs/reference.md lists every one),
# kept whole although this server raises only some of them.
_.COMMAND_PERMISSION_DENIED
_.PROCESS_PERMISSION_DENIED
_.PROCESS_ERROR
_.PROCESS_READY_TIMEOUT
_.PROCESS_EXITED_BEFORE_READY
_.INVALID_PORT
_.PORT_NOT_EXPOSED
_.PORT_ALREADY_EXPOSED
_.PORT_IN_USE
_.PORT_OPERATION_ERROR
_.SERVICE_NOT_RESPONDING
_.CUSTOM_DOMAIN_REQUIRED
_.GIT_CHECKOUT_FAILED
_.INTERPRETER_NOT_READY
_.WATCH_NOT_FOUND
_.WATCH_STOP_ERROR
_.BACKUP_EXPIRED
_.MISSING_CREDENTIALS
_.INVALID_MOUNT_CONFIG
_.BUCKET_MOUNT_ERROR
_.BUCKET_UNMOUNT_ERROR
_.S3FS_MOUNT_ERROR
_.INVALID_JSON_RESPONSE
_.OPENCODE_STARTUP_FAILED
_.CONTAINER_UNAVAILABLE

# Wire fields of the contract's answers (msgspec structs: encoded, never read in Python).
_.duration
_.container_placement_id
_.latex
_.markdown
_.javascript
_.jpeg
_.svg

# Parameters a protocol or the contract fixes, unused in the body.
_.auto_cleanup  # processes.start: accepted and ignored, as upstream
_.exc_type  # Terminal.__aexit__
_.exc_info  # shutil.rmtree's onerror callback (backup.swap.remove_tree)
_.unfreeze  # tests/backup: a fixture asked for its teardown

# Read by the libraries they belong to.
_.accesslog  # hypercorn's Config (server, bench, interop peer)
_.errorlog
_.keep_alive_max_requests
_.include_server_header
_.daemon_threads  # socketserver
_.do_GET  # http.server.BaseHTTPRequestHandler
_.log_message
_._background_receive  # httpx-ws: AsyncWebSocketSession's reader, overridden (ws client)
_.__getattr__  # module __getattr__ and __dir__ (PEP 562): sandbox_core's lazy names
_.__dir__
_.__call__  # sandbox_core.testing.plugin.ServerFactory: a Protocol's call signature
_._secret  # tests/capnweb: a private method the engine must not expose

# The interpreter's kernel side: run inside the kernel by name (kernel.py sends kernel_bounds.py
# and calls these), and ipykernel's attributes it replaces (kernel_launcher.py).
_.bound_output
_.unshadow
_.channel  # IPython's _tee(channel) signature
_._pipe_uuid
_._pipe_flag
_._setup_pipe_in
_._setup_pipe_out
_.intercept_service  # grpc.aio.ServerInterceptor: grpc calls it for every incoming call
_.injected_api_client  # the agent-sandbox SDK's Sandbox reads it from its Kubernetes helper (tests/sandboxd NoCluster)
_.get_sandbox  # the agent-sandbox SDK's Sandbox calls it on its Kubernetes helper (tests/sandboxd NoCluster)
_.intercept_stream_stream  # grpc.StreamStreamClientInterceptor: grpc calls it for every streaming call (tests/sandboxd)
