"""``utils.metadata`` over the wire: prefixed variables, secret-looking names and the server's own dropped."""

from __future__ import annotations

import httpx

from sandbox_core.config import SERVER_ENVIRONMENT
from sandbox_core.testing.plugin import ServerFactory

ENV = {
    "SANDBOX_REGION": "eu-1",
    "SANDBOX_TEAM_NAME": "blue",
    "SANDBOX_API_KEY": "k",
    "SANDBOX_GITHUB_Token": "t",
    "SANDBOX_DB_PASSWD": "p",
    "SANDBOX_TLS_CERT_PATH": "c",
    "SANDBOX_OAUTH_CLIENT": "o",
    "SANDBOX_CREDENTIALS": "c",
    "SANDBOX_PRIVATE_THING": "p",
    "SANDBOX_BEARER": "b",
    "SANDBOX_SECRET": "s",
    "SANDBOX_PASSWORD": "p",
    "SANDBOX_TOKEN": "server-token-1234567890",  # the server's own: never sent, even by prefix
    "SANDBOX_TRACE_HOOKS": "0",
    "APP_MODE": "fast",
}


def test_metadata_sends_only_prefixed_harmless_variables(sandbox_server_factory: ServerFactory) -> None:
    server = sandbox_server_factory(env=ENV)
    headers = {"Authorization": "Bearer server-token-1234567890"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        body = client.post("/api/utils/metadata", json={}).json()["result"]  # the generic route's envelope
        assert body["success"] is True and body["prefix"] == "SANDBOX_"
        assert body["env"] == {"SANDBOX_REGION": "eu-1", "SANDBOX_TEAM_NAME": "blue"}, body
        assert not set(body["env"]) & SERVER_ENVIRONMENT
        assert client.post("/api/utils/metadata", json={"prefix": "APP_"}).json()["result"]["env"] == {
            "APP_MODE": "fast"
        }
        everything = client.post("/api/utils/metadata", json={"prefix": ""}).json()["result"]["env"]
        assert "SANDBOX_REGION" in everything and not set(everything) & SERVER_ENVIRONMENT
        assert not any(word in name.upper() for name in everything for word in ("TOKEN", "KEY", "AUTH"))
        bad = client.post("/api/utils/metadata", json={"prefix": "A-B"})
        assert bad.status_code == 400 and bad.json()["context"]["field"] == "prefix"
