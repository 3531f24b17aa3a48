"""``POST /v1/sync/push`` answers as a whole when the store refused every op for the
caller's role (a removal or demotion that raced the route's own check)."""

from __future__ import annotations

import pytest

from core.errors import ErrorBody, Forbidden, NotFound
from core.wire import OpResult
from gateway.sync_http import _refused_as_a_whole


def _rejected(code: str) -> OpResult:
    return OpResult(
        op_id="op", status="rejected", error=ErrorBody(code=code, message="m", retryable=False)
    )


def test_every_op_refused_as_not_found_is_404_as_a_whole() -> None:
    with pytest.raises(NotFound, match=r"^no such space$"):
        _refused_as_a_whole([_rejected("not_found"), _rejected("not_found")])


def test_every_op_refused_as_forbidden_is_403_as_a_whole() -> None:
    with pytest.raises(Forbidden, match=r"^readers may not push$"):
        _refused_as_a_whole([_rejected("forbidden")])


@pytest.mark.parametrize(
    "results",
    [
        [],
        [OpResult(op_id="op", status="applied", seq=3)],
        [_rejected("not_found"), OpResult(op_id="op", status="applied", seq=3)],
        [_rejected("forbidden"), _rejected("invalid_op")],
        [_rejected("not_found"), _rejected("forbidden")],
    ],
)
def test_anything_else_is_answered_op_by_op(results: list[OpResult]) -> None:
    _refused_as_a_whole(results)  # no exception
