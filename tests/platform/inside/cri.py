"""The few CRI calls a kubelet makes to start a pod, for tests: containerd's
CRI over gRPC, with the CRI API's own .proto (Debian's
golang-github-kubernetes-cri-api-dev) compiled by protoc when first used.

The .proto imports gogoproto only for Go's code generator (file options);
those lines are dropped before protoc reads it, nothing else changes.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.lab import run

API_PROTO = Path("/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto")
_GOGO = re.compile(r'^(import "github\.com/gogo/protobuf/.*|option \(gogoproto\..*)$', re.M)


def compile_api(directory: Path) -> ModuleType:
    """runtime.v1's messages, as a module made by protoc in ``directory``."""
    (directory / "api.proto").write_text(_GOGO.sub("", API_PROTO.read_text()))
    run(["protoc", f"-I{directory}", f"--python_out={directory}", str(directory / "api.proto")])
    spec = importlib.util.spec_from_file_location("api_pb2", directory / "api_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Cri:
    """runtime.v1.RuntimeService on the socket ``address``; ``api`` holds its
    messages (compile_api)."""

    def __init__(self, address: str, api: ModuleType) -> None:
        # Debian's python3-grpcio, in the machine; the host that collects
        # these tests has none.
        import grpc

        self.api = api
        self.errors = grpc.RpcError
        self.channel = grpc.insecure_channel(f"unix://{address}")

    def __call__(self, method: str, **fields: Any) -> Any:
        """``method``'s response to a request made of ``fields``."""
        request = getattr(self.api, f"{method}Request")(**fields)
        response = getattr(self.api, f"{method}Response")
        call = self.channel.unary_unary(
            f"/runtime.v1.RuntimeService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        return call(request, timeout=120)

    def serving(self) -> bool:
        """Whether the CRI answers, with every condition of its status met."""
        try:
            status = self("Status")
        except self.errors:
            return False
        return all(condition.status for condition in status.status.conditions)

    def remove_pods(self) -> None:
        """Stop and remove every pod (their shims end with them)."""
        for pod in self("ListPodSandbox").items:
            self("StopPodSandbox", pod_sandbox_id=pod.id)
            self("RemovePodSandbox", pod_sandbox_id=pod.id)

    def close(self) -> None:
        self.channel.close()
