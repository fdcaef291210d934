"""One owner per table: only the owning store module builds, changes or deletes its rows.

A static check over server/: row constructors, UPDATE/DELETE statements and
assignments to owned columns outside their owner fail here, so a new feature
cannot quietly add a fifth place that changes a generation's status.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "server"

GENERATIONS = "store/generations.py"
IMAGES = "store/images.py"
ALIASES = "store/aliases.py"
FLOWS = "store/flows.py"
TENANCY = "services/tenancy.py"
IDEMPOTENCY = "store/idempotency.py"
LIVE = "store/live.py"
WEBHOOKS = "store/webhooks.py"

# Row class → the modules that may construct it or name it in UPDATE/DELETE.
ROW_OWNERS = {
    "GenerationRow": {GENERATIONS},
    "GenerationReferenceRow": {GENERATIONS},
    "GenerationEventRow": {GENERATIONS},
    "EventHorizonRow": {GENERATIONS},
    "ImageRow": {IMAGES, ALIASES},
    "FlowAliasRow": {ALIASES},
    "FlowRow": {FLOWS},
    "ProjectRow": {TENANCY},
    "ApiKeyRow": {TENANCY},
    "IdempotencyKeyRow": {IDEMPOTENCY},
    "LiveScopeRow": {LIVE},
    "LiveEntryRow": {LIVE},
    "WebhookDeliveryRow": {WEBHOOKS},
    "WebhookAttemptRow": {WEBHOOKS},
}
# Columns only one table has → the modules that may assign them.
COLUMN_OWNERS = {
    **{
        name: {GENERATIONS}
        for name in (
            "status",
            "revision",
            "run",
            "attempt",
            "lease_token",
            "lease_expire_time",
            "output_image_id",
            "input_prompt",
            "enhanced_prompt",
            "aspect_ratio",
            "error_code",
            "error_message",
            "processing_time_ms",
            "start_time",
            "complete_time",
            "timeout_ms",
            "deadline_time",
            "cancel_time",
            "webhook_url",
            "webhook_events",
        )
    },
    **{
        name: {WEBHOOKS}
        for name in (
            "state",
            "next_attempt_time",
            "claim_token",
            "claim_expire_time",
            "finish_time",
        )
    },
    "webhook_secret": {TENANCY},
    **{
        name: {IMAGES}
        for name in (
            "object_key",
            "version",
            "etag",
            "focal_x",
            "focal_y",
            "file_size",
            "mime_type",
            "generation_id",
        )
    },
    "alias": {ALIASES},
}
# Not checked: the gRPC edge and the gateway set message fields (the import contracts keep
# them away from the store), and migrations are schema history.
SKIPPED = ("api/", "gateway/")


def modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        name = path.relative_to(SERVER).as_posix()
        if not name.startswith(SKIPPED) and "/migrations/" not in name:
            found.append((name, ast.parse(path.read_text(), name)))
    return found


Owners = dict[str, set[str]]


def violations(row_owners: Owners = ROW_OWNERS, column_owners: Owners = COLUMN_OWNERS) -> list[str]:
    """Every write to a row outside its owner, as "module:line what"."""
    found: list[str] = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                owners = row_owners.get(node.func.id)
                if owners is not None and name not in owners and name != "store/models.py":
                    found.append(f"{name}:{node.lineno} builds a {node.func.id}")
                if node.func.id in ("update", "update_rows", "delete", "delete_rows"):
                    for arg in node.args:
                        table = arg.id if isinstance(arg, ast.Name) else ""
                        if table in row_owners and name not in row_owners[table]:
                            found.append(f"{name}:{node.lineno} {node.func.id}s {table}")
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = [t for target in node.targets for t in _flatten(target)]
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and not _is_self(target):
                    owners = column_owners.get(target.attr)
                    if owners is not None and name not in owners:
                        found.append(f"{name}:{node.lineno} assigns .{target.attr}")
    return found


def _flatten(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, ast.Tuple | ast.List):
        return [t for element in target.elts for t in _flatten(element)]
    return [target]


def _is_self(target: ast.Attribute) -> bool:
    # An object's own attributes (self.status of some other class) are not row columns.
    return isinstance(target.value, ast.Name) and target.value.id == "self"


def test_every_row_is_changed_by_its_owner_only() -> None:
    assert violations() == []


@pytest.mark.parametrize("owner", [GENERATIONS, IMAGES, ALIASES, FLOWS, TENANCY])
def test_the_check_finds_the_owners_own_writes_once_they_are_not_owners(owner: str) -> None:
    """Not vacuous: take a module's ownership away and its writes show up."""

    def without(owners: Owners) -> Owners:
        return {key: value - {owner} for key, value in owners.items()}

    found = violations(without(ROW_OWNERS), without(COLUMN_OWNERS))
    assert any(v.startswith(owner + ":") for v in found), found
