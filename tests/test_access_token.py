"""With an access token, nothing runs code or touches files without it.

Upstream leaves the code interpreter open even then; we do not (README,
"Where we differ from upstream"): `/execute` needs the token the SDKs send.
"""

from __future__ import annotations

import json

import pytest
from e2b import ConnectionConfig
from e2b_code_interpreter import Sandbox
from packaging.version import Version

from tests.wire import http

TOKEN = "s3cret-token"


@pytest.fixture
def secured(daemon_factory):
    return daemon_factory("--access-token", TOKEN, code_interpreter=True)


def _sdk(url: str) -> Sandbox:
    """The code-interpreter SDK knowing the token, as after a real `create()`."""
    return Sandbox(
        sandbox_id="debug_sandbox_id",
        sandbox_domain=None,
        envd_version=Version("99.99.99"),
        envd_access_token=TOKEN,
        connection_config=ConnectionConfig(debug=True, sandbox_url=url),
    )


def test_the_sdk_runs_code_with_the_token(secured) -> None:
    sandbox = _sdk(secured.url)
    assert sandbox.run_code("6 * 7").text == "42"
    assert any(c.language == "python" for c in sandbox.list_code_contexts())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Access-Token": "wrong"},
        {"X-Access-Token": "\xff\xfe"},  # not UTF-8 on the wire
        {"Origin": "https://elsewhere.example", "Content-Type": "text/plain"},  # no preflight needed
    ],
    ids=["none", "wrong", "not-utf8", "cross-origin"],
)
def test_execute_without_the_token_is_refused(secured, headers: dict[str, str]) -> None:
    body = json.dumps({"code": "open('/tmp/pwned', 'w')"}).encode()
    status, _, text = http(f"{secured.url}/execute", "POST", body, headers)
    assert status == 401, text
    assert b"access token" in text
    status, _, _ = http(f"{secured.url}/envs", headers=headers)
    assert status == 401


def test_execute_with_the_token_streams(secured) -> None:
    body = json.dumps({"code": "6 * 7"}).encode()
    status, _, text = http(f"{secured.url}/execute", "POST", body, {"X-Access-Token": TOKEN})
    assert status == 200
    assert b'"text": "42"' in text or b'"text":"42"' in text


@pytest.mark.host_only
def test_token_from_a_file_and_a_warning_for_the_flag(daemon_factory, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    from_file = daemon_factory("--access-token-file", str(token_file))
    assert http(f"{from_file.url}/envs")[0] == 401
    assert http(f"{from_file.url}/envs", headers={"X-Access-Token": TOKEN})[0] == 200
    assert "readable by every local user" not in from_file.log_text()

    from_flag = daemon_factory("--access-token", TOKEN)
    assert http(f"{from_flag.url}/envs", headers={"X-Access-Token": TOKEN})[0] == 200
    assert "--access-token is readable by every local user" in from_flag.log_text()
