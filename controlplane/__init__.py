"""A local, E2B-compatible control plane: REST API, sandbox proxy, container backend.

The official SDKs' `Sandbox.create()`, `list()`, `connect()`, `kill()` and
timeouts work against it, with each sandbox one container of the project's
image, reached only through its Unix-socket ingress. See docs in README.md
("Run sandboxes locally").
"""
