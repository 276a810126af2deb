"""wg-pod: join podman containers to WireGuard networks from an OCI hook."""

__version__ = "0.1.0"
