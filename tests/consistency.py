"""A whole-state check of a running App: every pointer in the database and every stored object.

``await assert_consistent(app)`` waits until no generation is running, then
fails listing every dangling reference and every orphaned or missing object.
``await drop_bucket(app)`` hands an S3-backed test's bucket back afterwards.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from server.app import App
from server.domain.generations import GenerationStatus
from server.store.models import (
    FlowAliasRow,
    FlowRow,
    GenerationReferenceRow,
    GenerationRow,
    ImageRow,
    ProjectRow,
)

RUNNING = (GenerationStatus.PENDING.value, GenerationStatus.PROCESSING.value)


async def settle(app: App, timeout: float = 15.0) -> None:
    """Wait until no generation is due or running and no worker holds one."""
    deadline = time.monotonic() + timeout
    while True:
        async with app.db.read() as session:
            running = (
                await session.scalars(
                    select(GenerationRow.id).where(GenerationRow.status.in_(RUNNING))
                )
            ).all()
        if not running and app.engine.in_flight == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"generations still running after {timeout} s: {running}")
        await asyncio.sleep(0.02)


async def find_problems(app: App) -> list[str]:
    """Every dangling pointer and every orphaned or missing object, one line each."""
    async with app.db.read() as session:
        projects = set((await session.scalars(select(ProjectRow.id))).all())
        flows = {row.id: row for row in (await session.scalars(select(FlowRow))).all()}
        images = {row.id: row for row in (await session.scalars(select(ImageRow))).all()}
        generations = {row.id: row for row in (await session.scalars(select(GenerationRow))).all()}
        flow_aliases = (await session.scalars(select(FlowAliasRow))).all()
        references = (await session.scalars(select(GenerationReferenceRow))).all()
    stored = {info.key async for info in app.blobs.list("")}
    problems: list[str] = []

    def check_flow(owner: str, project_id: str, flow_id: str | None) -> None:
        if flow_id is None:
            return
        flow = flows.get(flow_id)
        if flow is None:
            problems.append(f"{owner}: flow_id {flow_id} names no flow")
        elif flow.project_id != project_id:
            problems.append(f"{owner}: flow {flow_id} belongs to project {flow.project_id}")

    for flow in flows.values():
        if flow.project_id not in projects:
            problems.append(f"flow {flow.id}: project {flow.project_id} does not exist")
    for image in images.values():
        owner = f"image {image.id}"
        if image.project_id not in projects:
            problems.append(f"{owner}: project {image.project_id} does not exist")
        check_flow(owner, image.project_id, image.flow_id)
        if image.generation_id is not None:
            generation = generations.get(image.generation_id)
            if generation is None:
                problems.append(f"{owner}: generation_id {image.generation_id} names no generation")
            elif generation.output_image_id != image.id:
                problems.append(
                    f"{owner}: its generation {generation.id} has output "
                    f"{generation.output_image_id}, not this image"
                )
            elif generation.project_id != image.project_id:
                problems.append(f"{owner}: its generation is in another project")
        if image.object_key not in stored:
            problems.append(f"{owner}: object {image.object_key} is missing from the image store")
    for generation in generations.values():
        owner = f"generation {generation.id}"
        if generation.project_id not in projects:
            problems.append(f"{owner}: project {generation.project_id} does not exist")
        check_flow(owner, generation.project_id, generation.flow_id)
        if generation.output_image_id is not None:
            output = images.get(generation.output_image_id)
            if output is None:
                problems.append(f"{owner}: output_image_id {generation.output_image_id} dangles")
            elif output.generation_id != generation.id:
                problems.append(
                    f"{owner}: output image {output.id} names generation {output.generation_id}"
                )
            elif output.project_id != generation.project_id:
                problems.append(f"{owner}: output image is in another project")
    for entry in flow_aliases:
        owner = f"flow alias {entry.alias} of flow {entry.flow_id}"
        flow = flows.get(entry.flow_id)
        image = images.get(entry.image_id)
        if flow is None:
            problems.append(f"{owner}: the flow does not exist")
        if image is None:
            problems.append(f"{owner}: image {entry.image_id} does not exist")
        if flow is not None and image is not None and flow.project_id != image.project_id:
            problems.append(f"{owner}: image {image.id} is in another project")
    for reference in references:
        owner = f"reference #{reference.position} of generation {reference.generation_id}"
        generation = generations.get(reference.generation_id)
        image = images.get(reference.image_id)
        if generation is None:
            problems.append(f"{owner}: the generation does not exist")
        if image is None:
            problems.append(f"{owner}: image {reference.image_id} does not exist")
        if (
            generation is not None
            and image is not None
            and generation.project_id != image.project_id
        ):
            problems.append(f"{owner}: image {image.id} is in another project")
    referenced = {image.object_key for image in images.values()}
    for key in sorted(stored - referenced):
        problems.append(f"object {key}: no image row points at it (orphaned)")
    return problems


async def assert_consistent(app: App, *, timeout: float = 15.0) -> None:
    """Fail, listing every problem, unless the database and the image store agree.

    A worker removes an uncommitted object just after it stops counting as in
    flight, so a problem must persist for a moment to count.
    """
    await settle(app, timeout)
    problems = await find_problems(app)
    for _ in range(10):
        if not problems:
            return
        await asyncio.sleep(0.05)
        problems = await find_problems(app)
    if problems:
        raise AssertionError(f"{len(problems)} consistency problem(s):\n  " + "\n  ".join(problems))
