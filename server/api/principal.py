"""The authenticated caller of the RPC running in this task (set by the interceptor)."""

from __future__ import annotations

from contextvars import ContextVar

from server.domain.tenancy import Principal

current_principal: ContextVar[Principal] = ContextVar("current_principal")


def project_id() -> str:
    """The caller's project (the auth interceptor has checked it is a project key)."""
    principal = current_principal.get()
    assert principal.project_id is not None
    return principal.project_id
