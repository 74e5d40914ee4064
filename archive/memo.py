"""Values that answering one request reads several times (the active model versions, the cells'
quality labels), read once per request instead.

A list page asked for the active DESOM-2 three times and built the cell quality map twice (its
label filter and its verdicts): four queries and the label rule, 5-6 of a 35 ms request at a
million exposures (benchmarks/bench_million.py). The memo lives for one request only
(`RequestMemoMiddleware`); outside a request (commands, tests calling services, a streamed
body read after its view returned) nothing is remembered and every call reads afresh. A write
that changes what is remembered (activating a version, labelling a cell) calls `forget`, so
the rest of that request reads the new state.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, TypeVar

T = TypeVar("T")

_memo: ContextVar[dict | None] = ContextVar("archive_request_memo", default=None)


@contextmanager
def request_scope():
    """Remember values until the block ends."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def remembered(key, compute: Callable[[], T]) -> T:
    """compute(), or what it gave for `key` earlier in the same request."""
    memo = _memo.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def forget() -> None:
    """Drop what this request remembered (after a write that changes it)."""
    memo = _memo.get()
    if memo is not None:
        memo.clear()


class RequestMemoMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with request_scope():
            return self.get_response(request)
