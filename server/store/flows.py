"""Flow rows: created on first use, looked up within a project."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import not_found
from server.domain.generations import FlowChoice
from server.domain.ids import new_id
from server.store.models import FlowRow
from server.store.upsert import insert_if_absent


async def ensure_flow(
    session: AsyncSession, project_id: str, choice: FlowChoice, now: datetime
) -> str | None:
    """The flow ID a request's flow choice stands for, creating the flow if needed."""
    if choice.mode == "none":
        return None
    flow_id = new_id() if choice.mode == "new" else choice.flow_id
    assert flow_id is not None
    table = FlowRow.__table__
    await insert_if_absent(
        session,
        table,  # type: ignore[arg-type]
        {"id": flow_id, "project_id": project_id, "create_time": now, "update_time": now},
    )
    row = await session.get(FlowRow, flow_id)
    if row is None or row.project_id != project_id:
        # Another project's flow: indistinguishable from a missing one for this caller.
        raise not_found("flow", flow_id)
    row.update_time = now
    return flow_id
