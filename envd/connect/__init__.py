"""The Connect protocol layer: framing, codecs, errors, deadlines, keep-alives."""

from envd.connect.errors import Code, ConnectError
from envd.connect.server import ConnectServer, Kind, Rpc, RpcContext

__all__ = ["Code", "ConnectError", "ConnectServer", "Kind", "Rpc", "RpcContext"]
