"""What the SDK raises: HTTP answers with their wire code, a lost session, a sync that
did not finish in time."""

from __future__ import annotations


class ClientError(Exception):
    """Root of the SDK's errors."""


class ApiError(ClientError):
    """An HTTP answer with an error of docs/protocol.md section 4 (``status`` 0: no answer)."""

    def __init__(self, status: int, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable


class SignedOut(ClientError):
    """The session is gone (revoked, logged out, refresh token reused) and no password
    is at hand to sign in again. Queued ops stay in the local store for the next open."""


class SyncTimeout(ClientError, TimeoutError):
    """``Device.sync`` did not see the queue drain and every space catch up in time."""


class Offline(ClientError):
    """``Device.sync`` was called while the device is switched offline."""
