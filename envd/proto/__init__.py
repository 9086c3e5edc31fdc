"""Protobuf messages generated from the .proto files next to this module."""
