"""The embedded engine's calls to its llama.cpp server survive a dropped keep-alive connection.

llama.cpp's server closes a keep-alive connection after some requests; a request sent on it just
then fails before any response. These tests script that with ``httpx.MockTransport``.
"""

from __future__ import annotations

import threading
import warnings

import httpx
import pytest

from ttscale.core.errors import EngineError
from ttscale.engines.kv_slots import SlotPlanner
from ttscale.engines.llama_kv_store import SnapshotFiles
from ttscale.engines.llama_tokens import POST_ATTEMPTS, LlamaTokens


def flaky_client(failures: int, ok: dict, status: int = 200) -> tuple[httpx.Client, list[str]]:
    """A client whose first ``failures`` requests are dropped before a response."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(status, json=ok)

    return httpx.Client(base_url="http://llama.local", transport=httpx.MockTransport(handler)), seen


def test_a_dropped_connection_is_sent_again() -> None:
    http, seen = flaky_client(1, {"tokens": [5, 6, 7]})
    tokens = LlamaTokens(http)
    assert tokens.tokenize("hi") == (5, 6, 7)
    assert seen == ["/tokenize", "/tokenize"]


def test_every_attempt_dropped_names_the_path() -> None:
    http, seen = flaky_client(99, {})
    with pytest.raises(EngineError, match=r"/apply-template failed: Server disconnected"):
        LlamaTokens(http).post("/apply-template", {"messages": []})
    assert len(seen) == POST_ATTEMPTS


def test_an_http_error_status_is_not_retried() -> None:
    http, seen = flaky_client(0, {"error": "bad"}, status=500)
    with pytest.raises(EngineError, match=r"/tokenize returned 500"):
        LlamaTokens(http).post("/tokenize", {"content": "x"})
    assert seen == ["/tokenize"]


def test_slot_snapshots_stay_on_after_one_dropped_connection() -> None:
    planner = SlotPlanner(2, store_bytes=1 << 20)
    http, seen = flaky_client(1, {"n_saved": 3, "n_written": 100})
    files = SnapshotFiles(http, planner, threading.Lock(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # switching the store off warns
        files.save(0, (1, 2, 3))
    assert seen == ["/slots/0", "/slots/0"]
    assert planner.store_enabled
