"""`/files` and the filesystem RPCs over raw HTTP: what the SDK cannot send or check
(docs/envd-api.md §6.7, §6.8, §6.10, §3.1), plus signed URLs through the SDK."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from e2b import ConnectionConfig, Sandbox
from packaging.version import Version

from envd.auth import sign
from tests.envd.helpers import TOKEN
from tests.harness import wait_until
from tests.wire import http, unary

# host_only: the fixtures prepare and inspect files on this host (tests/envd/conftest.py).
pytestmark = [pytest.mark.timeout(60), pytest.mark.host_only]


def files_url(daemon, **query: str) -> str:
    return f"{daemon.url}/files?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    """(field name, filename, data) parts → body and content type."""
    body = b""
    for field, filename, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def error_body(raw: bytes) -> dict:
    return json.loads(raw)


# -- uploads ----------------------------------------------------------------------


def test_multipart_keeps_directories_skips_other_fields(envd_daemon, home_dir) -> None:
    body, content_type = multipart(
        [
            ("file", f"{home_dir}/d/one;two;three.txt", b"1"),
            ("other", "ignored.txt", b"?"),
            ("file", f"{home_dir}/ü space.txt", b"2"),
        ]
    )
    status, headers, raw = http(files_url(envd_daemon), "POST", body, {"Content-Type": content_type})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(raw) == [
        {"path": f"{home_dir}/d/one;two;three.txt", "name": "one;two;three.txt", "type": "file"},
        {"path": f"{home_dir}/ü space.txt", "name": "ü space.txt", "type": "file"},
    ]
    assert not os.path.exists(f"{home_dir}/ignored.txt")
    assert open(f"{home_dir}/ü space.txt", "rb").read() == b"2"


def test_multipart_same_target_twice(envd_daemon, home_dir) -> None:
    body, content_type = multipart([("file", "same", b"first"), ("file", "same", b"second")])
    status, _, raw = http(files_url(envd_daemon, path=f"{home_dir}/same"), "POST", body, {"Content-Type": content_type})
    assert status == 400
    assert "cannot upload multiple files to the same path" in error_body(raw)["message"]
    assert open(f"{home_dir}/same", "rb").read() == b"first"


def test_raw_upload_needs_a_path(envd_daemon) -> None:
    status, _, raw = http(files_url(envd_daemon), "POST", b"x", {"Content-Type": "application/octet-stream"})
    assert (status, error_body(raw)) == (
        400,
        {"code": 400, "message": "path query parameter is required for raw body upload"},
    )


def test_gzip_upload_and_download(envd_daemon, home_dir) -> None:
    data = b"compress me " * 10_000
    status, _, raw = http(
        files_url(envd_daemon, path=f"{home_dir}/gz.txt"),
        "POST",
        gzip.compress(data),
        {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert status == 200, raw
    assert open(f"{home_dir}/gz.txt", "rb").read() == data
    status, headers, raw = http(files_url(envd_daemon, path=f"{home_dir}/gz.txt"), headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and "Content-Length" not in headers
    assert gzip.decompress(raw) == data
    status, headers, raw = http(
        files_url(envd_daemon, path=f"{home_dir}/gz.txt"), headers={"Accept-Encoding": "identity"}
    )
    assert "Content-Encoding" not in headers and raw == data
    assert headers["Content-Length"] == str(len(data))


def test_bad_content_type_encoding_and_metadata(envd_daemon, home_dir) -> None:
    url = files_url(envd_daemon, path=f"{home_dir}/x")
    status, _, raw = http(url, "POST", b"x", {"Content-Type": "text/plain"})
    assert status == 400 and error_body(raw)["message"].startswith("unsupported content type: text/plain")
    status, _, raw = http(url, "POST", b"x", {"Content-Type": ""})
    assert status == 400 and error_body(raw)["message"].startswith("unsupported content type: ,")
    status, _, raw = http(
        url, "POST", b"x", {"Content-Type": "application/octet-stream", "Content-Encoding": "compress"}
    )
    assert (status, error_body(raw)["message"]) == (
        400,
        "error decompressing request body: unsupported Content-Encoding: compress, supported: [gzip]",
    )
    status, _, raw = http(url, "POST", b"x", {"Content-Type": "application/octet-stream", "X-Metadata-Key": "é"})
    assert status == 400 and error_body(raw)["message"].startswith("invalid metadata:")
    status, _, raw = http(url, "POST", b"x", {"Content-Type": "application/octet-stream", "X-Metadata-Big": "v" * 5000})
    assert status == 400
    assert not os.path.exists(f"{home_dir}/x")


def test_corrupt_gzip_and_broken_multipart_leave_nothing(envd_daemon, home_dir) -> None:
    url = files_url(envd_daemon, path=f"{home_dir}/bad")
    corrupt = b"this is not gzip data" * 1000
    status, _, raw = http(
        url, "POST", corrupt, {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    )
    assert status == 400, raw
    assert not os.path.exists(f"{home_dir}/bad")
    body, content_type = multipart([("file", "bad", b"data" * 1000)])
    status, _, raw = http(url, "POST", body[:-30], {"Content-Type": content_type})
    assert status == 400, raw
    assert not os.path.exists(f"{home_dir}/bad")
    status, _, _ = http(files_url(envd_daemon), "GET")  # still serving
    assert status == 400


def test_interrupted_upload_leaves_no_partial_file(envd_daemon, home_dir) -> None:
    target = f"{home_dir}/interrupted.bin"
    with socket.create_connection(("127.0.0.1", envd_daemon.port)) as sock:
        sock.sendall(
            f"POST /files?path={urllib.parse.quote(target)} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n".encode()
        )
        sock.sendall(b"x" * 2_000_000)  # more than one write buffer: data reaches the disk
        reached = wait_until(lambda: os.path.exists(target) and os.path.getsize(target) > 0, 20)
        assert reached, "no data reached the disk"
    assert wait_until(lambda: not os.path.exists(target), 20), "the partial file stayed"
    status, _, _ = http(files_url(envd_daemon, path=target))
    assert status == 404


def test_disk_full_is_507_and_leaves_no_file(envd_daemon, tiny_fs) -> None:
    target = f"{tiny_fs}/big.bin"
    status, _, raw = http(
        files_url(envd_daemon, path=target),
        "POST",
        b"x" * 2_000_000,
        {"Content-Type": "application/octet-stream"},
    )
    assert (status, error_body(raw)) == (507, {"code": 507, "message": "not enough disk space available"})
    assert os.listdir(tiny_fs) == []


# -- downloads --------------------------------------------------------------------


def test_download_headers_and_ranges(envd_daemon, home_dir) -> None:
    path = f"{home_dir}/ränge.txt"
    with open(path, "wb") as file:
        file.write(b"0123456789")
    url = files_url(envd_daemon, path=path)
    status, headers, raw = http(url, headers={"Accept-Encoding": "identity"})
    assert (status, raw) == (200, b"0123456789")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Disposition"] == "inline; filename*=utf-8''r%C3%A4nge.txt"
    assert headers["Accept-Ranges"] == "bytes" and headers["Vary"] == "Accept-Encoding"
    status, headers, raw = http(url, headers={"Range": "bytes=2-4"})
    assert (status, raw, headers["Content-Range"]) == (206, b"234", "bytes 2-4/10")
    assert "Content-Encoding" not in headers
    status, _, raw = http(url, headers={"Range": "bytes=-3"})
    assert (status, raw) == (206, b"789")
    status, headers, _ = http(url, headers={"Range": "bytes=50-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */10")


def test_several_ranges_come_as_multipart_byteranges(envd_daemon, home_dir) -> None:
    path = f"{home_dir}/r.txt"
    with open(path, "wb") as file:
        file.write(b"0123456789")
    url = files_url(envd_daemon, path=path)
    status, headers, raw = http(url, headers={"Range": "bytes=0-1, 5-, -2"})
    assert status == 206
    media_type, _, boundary = headers["Content-Type"].partition("; boundary=")
    assert media_type == "multipart/byteranges" and int(headers["Content-Length"]) == len(raw)
    message = email.message_from_bytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + raw, policy=email.policy.HTTP
    )
    parts = [(p["Content-Range"], p.get_content_type(), p.get_payload(decode=True)) for p in message.iter_parts()]
    assert parts == [
        ("bytes 0-1/10", "text/plain", b"01"),
        ("bytes 5-9/10", "text/plain", b"56789"),
        ("bytes 8-9/10", "text/plain", b"89"),
    ]
    assert raw.endswith(f"\r\n--{boundary}--\r\n".encode())
    status, headers, raw = http(url, headers={"Range": "bytes=50-, 2-3"})  # past the end: dropped
    assert (status, raw, headers["Content-Range"]) == (206, b"23", "bytes 2-3/10")
    status, _, raw = http(url, headers={"Range": "bytes=0-8, 1-9"})  # more than the file: all of it
    assert (status, raw) == (200, b"0123456789")
    assert http(url, headers={"Range": "bytes=5-2, 0-1"})[0] == 416


def test_accept_encoding_negotiation(envd_daemon, home_dir) -> None:
    with open(f"{home_dir}/n.json", "w") as file:
        file.write("{}")
    url = files_url(envd_daemon, path=f"{home_dir}/n.json")
    _, headers, _ = http(url, headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/json"
    _, headers, _ = http(url, headers={"Accept-Encoding": "gzip;q=1, identity;q=0.5"})
    assert headers["Content-Encoding"] == "gzip"
    # httpx's blanket `gzip, deflate` (every SDK read) is served fast, as identity.
    _, headers, _ = http(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert "Content-Encoding" not in headers and headers["Content-Length"] == "2"
    _, headers, _ = http(url, headers={"Accept-Encoding": "br, gzip;q=0"})
    assert "Content-Encoding" not in headers
    status, _, raw = http(url, headers={"Accept-Encoding": "identity;q=0, br"})
    assert (status, error_body(raw)["message"]) == (
        406,
        "error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]",
    )


def test_download_errors(envd_daemon, home_dir) -> None:
    status, _, raw = http(files_url(envd_daemon, path=f"{home_dir}/nope"))
    assert (status, error_body(raw)) == (404, {"code": 404, "message": f"path '{home_dir}/nope' does not exist"})
    status, headers, raw = http(files_url(envd_daemon, path=home_dir))
    assert (status, error_body(raw)["message"]) == (400, f"path '{home_dir}' is a directory")
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    status, _, raw = http(files_url(envd_daemon, path="~root/x"))
    assert status == 400 and "cannot expand user-specific home dir" in error_body(raw)["message"]
    status, _, raw = http(files_url(envd_daemon, path="/etc/hostname", username=""))
    assert (status, error_body(raw)["message"]) == (401, "error looking up user '': user: unknown user ")


# -- Connect RPCs with bad bodies ---------------------------------------------------------


def test_malformed_rpc_bodies_are_invalid_argument(envd_daemon, home_dir) -> None:
    for body in (b"{not json", b'{"path": 12}', b"[]"):
        status, reply = unary(envd_daemon.url, "filesystem.Filesystem/Stat", body)
        assert (status, reply["code"]) == (400, "invalid_argument")
    status, _, raw = http(
        f"{envd_daemon.url}/filesystem.Filesystem/Stat",
        "POST",
        b"\x0a\xff\xff\xff",
        {"Content-Type": "application/proto"},
    )
    assert (status, json.loads(raw)["code"]) == (400, "invalid_argument")
    status, reply = unary(envd_daemon.url, "filesystem.Filesystem/Stat", {"path": home_dir, "unknownField": 1})
    assert status == 200 and reply["entry"]["path"] == home_dir  # still serving


def test_wrong_content_type_is_415(envd_daemon) -> None:
    status, _, _ = http(f"{envd_daemon.url}/filesystem.Filesystem/Stat", "POST", b"{}", {"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = http(
        f"{envd_daemon.url}/filesystem.Filesystem/WatchDir", "POST", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 415


def test_stat_wire_format(envd_daemon, home_dir) -> None:
    with open(f"{home_dir}/x", "w") as file:
        file.write("hello world!!")
    os.chown(f"{home_dir}/x", os.stat("/home/user").st_uid, os.stat("/home/user").st_gid)
    status, reply = unary(envd_daemon.url, "filesystem.Filesystem/Stat", {"path": f"{home_dir}/x"})
    entry = reply["entry"]
    assert status == 200
    assert {k: entry[k] for k in ("name", "type", "size", "mode", "permissions", "owner")} == {
        "name": "x",
        "type": "FILE_TYPE_FILE",
        "size": "13",
        "mode": 420,
        "permissions": "-rw-r--r--",
        "owner": "user",
    }
    assert entry["modifiedTime"].endswith("Z")
    status, reply = unary(envd_daemon.url, "filesystem.Filesystem/Stat", {"path": f"{home_dir}/missing"})
    assert (status, reply) == (
        404,
        {
            "code": "not_found",
            "message": f"file not found: lstat {home_dir}/missing: no such file or directory",
        },
    )


# -- signed URLs --------------------------------------------------------------------------


def secured_sandbox(url: str) -> Sandbox:
    """An SDK sandbox that knows the envd token, as a non-debug `create()` would."""
    return Sandbox(
        sandbox_id="debug_sandbox_id",
        sandbox_domain=None,
        envd_version=Version("99.99.99"),
        envd_access_token=TOKEN,
        connection_config=ConnectionConfig(
            debug=True, sandbox_url=url, extra_sandbox_headers={"X-Access-Token": TOKEN}
        ),
    )


def test_signed_urls_through_the_sdk(daemon_factory, home_dir) -> None:
    secured = daemon_factory("--access-token", TOKEN)
    sandbox = secured_sandbox(secured.url)
    sandbox.files.write(f"{home_dir}/via-token.txt", "token works")  # header token
    assert sandbox.files.read(f"{home_dir}/via-token.txt") == "token works"

    upload = sandbox.upload_url(f"{home_dir}/signed file.txt", use_signature_expiration=120)
    body, content_type = multipart([("file", "ignored", b"signed upload")])
    status, _, raw = http(upload, "POST", body, {"Content-Type": content_type})
    assert status == 200, raw
    assert json.loads(raw)[0]["path"] == f"{home_dir}/signed file.txt"

    download = sandbox.download_url(f"{home_dir}/signed file.txt", user="user")
    assert "signature=v1_" in download and "signature_expiration" not in download
    assert http(download)[2] == b"signed upload"
    assert http(download.replace("signature=v1_", "signature=v1_x"))[0] == 401


def test_signature_failures(daemon_factory, home_dir) -> None:
    secured = daemon_factory("--access-token", TOKEN)
    path = f"{home_dir}/s.txt"
    with open(path, "w") as file:
        file.write("s")
    past = int(time.time()) - 10
    expired = files_url(
        secured, path=path, signature=sign(path, "read", "", TOKEN, past), signature_expiration=str(past)
    )
    status, headers, raw = http(expired)
    assert (status, json.loads(raw)) == (401, {"code": 401, "message": "signature is already expired"})
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    cases = {
        files_url(secured, path=path): "missing signature query parameter",
        files_url(secured, path=path, signature=sign(path, "write", "", TOKEN, None)): "invalid signature",
        files_url(secured, path=path, signature=sign(path, "read", "", "other", None)): "invalid signature",
    }
    for url, message in cases.items():
        assert http(url)[0::2] == (401, json.dumps({"code": 401, "message": message}).encode() + b"\n")
    status, _, raw = http(files_url(secured, path=path), headers={"X-Access-Token": "wrong"})
    assert (status, json.loads(raw)["message"]) == (401, "access token present in header but does not match")
    bad_expiry = files_url(secured, path=path, signature="v1_x", signature_expiration="soon")
    status, headers, _ = http(bad_expiry)
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    good = files_url(secured, path=path, signature=sign(path, "read", "", TOKEN, None))
    assert http(good)[0::2] == (200, b"s")
    assert unary(secured.url, "filesystem.Filesystem/Stat", {})[0] == 401  # RPCs need the header token


def test_fifo_is_refused_without_blocking_the_daemon(envd_daemon, home_dir) -> None:
    """Reading or writing a named pipe would block forever: 400, and the daemon keeps serving."""
    fifo = f"{home_dir}/pipe"
    os.mkfifo(fifo)
    try:
        for method, body, headers in (
            ("GET", None, {}),
            ("POST", b"data", {"Content-Type": "application/octet-stream"}),
        ):
            request = urllib.request.Request(
                files_url(envd_daemon, path=fifo), data=body, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    status, raw = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
            assert status == 400, (method, raw)
            reply = error_body(raw)
            assert reply["code"] == 400 and "not a regular file" in reply["message"], reply
            assert fifo in reply["message"]
            started = time.monotonic()
            assert http(f"{envd_daemon.url}/health")[0] == 204
            assert time.monotonic() - started < 2
        assert os.path.exists(fifo) and not os.path.isfile(fifo)  # left as it was
    finally:
        # Unblock a daemon stuck in open(2) on the pipe (O_RDWR never blocks on Linux).
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        os.close(fd)


def test_download_of_a_file_that_shrinks_midway_fails_instead_of_hanging(envd_daemon, home_dir) -> None:
    """Content-Length comes from the stat; a short body must end the connection."""
    from http.client import HTTPConnection, IncompleteRead

    path = f"{home_dir}/shrinks.bin"
    size = 256 * 1024 * 1024
    with open(path, "wb") as file:
        file.truncate(size)  # sparse: costs no disk
    parsed = urllib.parse.urlsplit(envd_daemon.url)
    connection = HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        connection.request("GET", "/files?" + urllib.parse.urlencode({"path": path}))
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == str(size)
        assert len(response.read(1024 * 1024)) == 1024 * 1024
        os.truncate(path, 0)  # the daemon is blocked on a full socket meanwhile
        started = time.monotonic()
        with pytest.raises(IncompleteRead) as caught:
            response.read()  # the rest: the body ends short, an error, no hang
        assert len(caught.value.partial) < size - 1024 * 1024
        assert time.monotonic() - started < 10
    finally:
        connection.close()
    assert http(f"{envd_daemon.url}/health")[0] == 204
