"""The ws client overrides a private method of httpx-ws (``_Session._background_receive``): the
httpx-ws code it replaces or relies on must be what it was written for. An httpx-ws release that
changes any of it fails here, naming the override to review, instead of silently breaking the
client's bounds on incoming messages."""

from __future__ import annotations

import pytest
from httpx_ws import AsyncWebSocketSession

from sandbox_core import patching
from sandbox_transport_ws import client

OWNER = "sandbox_transport_ws.client"


def test_httpx_ws_code_the_client_overrides_is_unchanged() -> None:
    problems = patching.changed_code(client.PATCHED_CODE, OWNER)
    assert not problems, "\n".join(problems)


def test_each_override_is_an_override_of_httpx_ws() -> None:
    """Each entry names a method of ours that replaces one of httpx-ws's session."""
    assert client.PATCHED_CODE, "no override listed"
    for override, pieces in client.PATCHED_CODE.items():
        cls, _, method = override.partition(".")
        ours = getattr(getattr(client, cls), method)
        theirs = getattr(AsyncWebSocketSession, method)
        assert ours is not theirs, f"{override} overrides nothing"
        replaced = f"httpx_ws._api:AsyncWebSocketSession.{method}"
        assert replaced in pieces, f"{override}: the method it replaces is not listed"


def test_a_change_in_httpx_ws_names_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the guard says when the installed httpx-ws is not what the override was written for."""
    name = "httpx_ws._api:AsyncWebSocketSession._background_receive"
    monkeypatch.setitem(client.PATCHED_CODE["_Session._background_receive"], name, "0" * 16)
    problems = patching.changed_code(client.PATCHED_CODE, OWNER)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{OWNER}._Session._background_receive: {name} has changed")
