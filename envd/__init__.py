"""envd: an E2B-compatible in-sandbox daemon (envd API and code interpreter)."""

__version__ = "0.1.0"

#: The envd protocol version we advertise. The SDKs gate features on it
#: (docs/envd-api.md §1.6); anything >= 0.6.4 enables every feature they have.
ENVD_PROTOCOL_VERSION = "0.6.13"
