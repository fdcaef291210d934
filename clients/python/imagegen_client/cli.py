"""The `imagegen` client commands (generate, list, get, watch, upload, …) on the Python SDK.

Every command talks to a running server at ``--address`` (else
``IMAGEGEN_ADDRESS``, else 127.0.0.1:50051) with ``--api-key`` (else
``IMAGEGEN_API_KEY``), prints people-friendly output with rich, or with
``--json`` the protobuf JSON of the reply (one object per line for ``watch``)
for scripts. Errors are one line on stderr, for example
``imagegen: NOT_FOUND GENERATION_NOT_FOUND: generation '…' not found``.

Exit codes:
  0    success
  1    the server answered with an error (NOT_FOUND, INVALID_ARGUMENT, …)
  2    usage error: bad arguments, or a local file that cannot be read or written
  3    the server could not be reached (UNAVAILABLE, after retries)
  4    the generation FAILED or was CANCELLED (generate/regenerate/wait with --wait)
  5    timed out (DEADLINE_EXCEEDED, including --wait-timeout)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from imagegen_client._genrpc.imagegen.v1 import generation_pb2, image_pb2
from imagegen_client.connection import (
    ADDRESS_ENV,
    API_KEY_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
)
from imagegen_client.errors import DeadlineExceeded, ImagegenError
from imagegen_client.live import live_url
from imagegen_client.messages import is_terminal, status_name
from imagegen_client.sync import Client

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_GENERATION_FAILED = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130
PIPE_WIDTH = 160
STATUS_CHOICES = ("pending", "processing", "success", "failed")

EXIT_CODES_HELP = """\
exit codes: 0 ok, 1 API error, 2 usage error, 3 server unavailable,
4 generation FAILED or CANCELLED (--wait), 5 timed out, 130 interrupted
"""


def other_commands_help(names: Sequence[str]) -> str:
    """The commands installed distributions add (``imagegen.commands``), for --help."""
    if not names:
        return ""
    return (
        "other commands (from installed distributions; `imagegen NAME -h` for each):\n  "
        + ", ".join(names)
        + "\n\n"
    )


Handler = Callable[[Client, argparse.Namespace, "Output"], int]


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see (a bad --meta, a missing file)."""


# --- output ---


class Output:
    """Where a command's results go: rich text for people, protobuf JSON for scripts."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        # Built per run, on the current sys.stdout/sys.stderr, so redirection works.
        # Piped output is not cut to 80 columns: logs and greps get whole rows.
        width = None if sys.stdout.isatty() else PIPE_WIDTH
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=width)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def json(self, message: Message, *, compact: bool = False) -> None:
        """The message as protobuf JSON (camelCase, every field, as buf curl shows it)."""
        text = json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, indent=None if compact else 2
        )
        if compact:
            text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def line(self, text: str | Text) -> None:
        """One line for people."""
        self.console.print(text if isinstance(text, Text) else Text(text))

    def fields(self, message: Message) -> None:
        """A message as "name  value" rows (nested messages as compact JSON)."""
        values = json_format.MessageToDict(message, preserving_proto_field_name=True)
        width = max((len(name) for name in values), default=0)
        for name, value in values.items():
            row = Text(name.ljust(width), style="bold")
            row.append("  " + _plain(name, value), style="")
            self.console.print(row)

    def show(self, message: Message) -> None:
        """JSON in --json mode, else the fields."""
        if self.json_mode:
            self.json(message)
        else:
            self.fields(message)


def _plain(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value.removeprefix("GENERATION_STATUS_") if name == "status" else value
    return json.dumps(value, ensure_ascii=False)


def _when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M")


def _size(image: image_pb2.Image) -> str:
    return f"{image.width}x{image.height}" if image.width else ""


# --- argument helpers ---


def parse_meta(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """``k=v`` pairs as a JSON object; a value that parses as JSON is used as such."""
    if not pairs:
        return None
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta {pair!r}: expected KEY=VALUE")
        try:
            meta[key] = json.loads(raw)
        except ValueError:
            meta[key] = raw
    return meta


def flow_choice(args: argparse.Namespace) -> str | None:
    """--flow-id ID, --no-flow (""), or neither (None: the server mints a flow)."""
    if getattr(args, "no_flow", False):
        return ""
    value: str | None = getattr(args, "flow_id", None)
    return value


def parse_focal_point(raw: str | None) -> tuple[float, float] | None:
    """Parse "x,y" with both in 0..1."""
    if raw is None:
        return None
    try:
        x, y = (float(part) for part in raw.split(","))
    except ValueError:
        raise UsageError(f"--focal-point {raw!r}: expected X,Y such as 0.5,0.3") from None
    return x, y


# --- generations ---


def describe(generation: generation_pb2.Generation) -> str:
    """A one-line summary of a generation's state."""
    state = status_name(generation.status)
    parts = [generation.id, state, f"rev {generation.revision}"]
    if generation.status == generation_pb2.GENERATION_STATUS_FAILED:
        parts.append(f"{generation.error.code}: {generation.error.message}")
    elif generation.HasField("output_image") and generation.output_image.width:
        parts.append(_size(generation.output_image))
        parts.append(generation.output_image.url)
    return "  ".join(part for part in parts if part)


def wait_and_fetch(
    client: Client,
    generation: generation_pb2.Generation,
    args: argparse.Namespace,
    out: Output,
) -> int:
    """Follow a generation to its end with a live status line, then report (and --out) it."""
    final = generation
    if args.wait or args.out:
        final = follow_live(client, generation, args.wait_timeout, out)
    if args.quiet:
        out.line(final.id)
    elif out.json_mode:
        out.json(final)
    else:
        out.line(describe(final))
    if not is_terminal(final):
        return EXIT_OK
    if final.status == generation_pb2.GENERATION_STATUS_FAILED:
        out.err.print(
            Text(
                f"imagegen: generation {final.id} FAILED: {final.error.code}: {final.error.message}"
            )
        )
        return EXIT_GENERATION_FAILED
    if final.status == generation_pb2.GENERATION_STATUS_CANCELLED:
        out.err.print(Text(f"imagegen: generation {final.id} CANCELLED"))
        return EXIT_GENERATION_FAILED
    if args.out:
        downloaded = client.download(final.output_image.id, args.out)
        if not (out.json_mode or args.quiet):
            out.line(f"wrote {downloaded.path} ({downloaded.mime_type}, {downloaded.size} bytes)")
    return EXIT_OK


def follow_live(
    client: Client,
    generation: generation_pb2.Generation,
    timeout: float | None,
    out: Output,
) -> generation_pb2.Generation:
    """Watch until the end (SUCCESS, FAILED, CANCELLED), with a live status line on stderr."""
    final = generation
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out.err,
        transient=True,
        # A live line only for people: piped stderr stays clean for the error line.
        disable=not out.err.is_terminal,
    )
    with progress, _timeout_named(generation.id, timeout):
        task = progress.add_task(f"{generation.id}  {status_name(generation.status)}", total=None)
        for event in client.watch(generation.id, timeout=timeout):
            final = event.generation
            progress.update(
                task, description=f"{final.id}  {status_name(final.status)}  rev {event.revision}"
            )
            if event.type == generation_pb2.GENERATION_EVENT_TYPE_DELETED:
                raise ImagegenError(
                    f"generation {final.id!r} was deleted", code=grpc.StatusCode.NOT_FOUND
                )
    return final


@contextlib.contextmanager
def _timeout_named(generation_id: str, timeout: float | None) -> Iterator[None]:
    """Say which wait timed out, instead of gRPC's "Deadline Exceeded"."""
    try:
        yield
    except DeadlineExceeded as error:
        if timeout is None:  # not our deadline: the server's own
            raise
        raise DeadlineExceeded(
            f"generation {generation_id!r} did not finish within {timeout:g} s",
            correlation_id=error.correlation_id,
        ) from error


def cmd_generate(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`generate PROMPT`: create a generation (and with --wait/--out follow it)."""
    generation = client.create_generation(
        args.prompt,
        aspect_ratio=args.aspect_ratio,
        reference_images=args.ref or (),
        flow_id=flow_choice(args),
        alias=args.alias,
        flow_alias=args.flow_alias,
        auto_enhance=False if args.no_enhance else None,
        enhancement_template=args.template,
        meta=parse_meta(args.meta),
        request_id=args.request_id,
        model=args.model,
        seed=args.seed,
        negative_prompt=args.negative,
        output_format=args.output_format,
        run_timeout=args.run_timeout,
        webhook_url=args.webhook,
        webhook_events=args.webhook_event or (),
    )
    return wait_and_fetch(client, generation, args, out)


def cmd_regenerate(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`regenerate ID`: run a generation again."""
    generation = client.regenerate_generation(args.id, request_id=args.request_id)
    return wait_and_fetch(client, generation, args, out)


def cmd_wait(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`wait ID`: follow a generation until it ends."""
    args.wait = True
    return wait_and_fetch(client, client.get_generation(args.id), args, out)


def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`list`: a table (or JSON) of generations, newest first."""
    page = client.list_generations(
        flow_id=args.flow_id,
        status=args.status,
        limit=args.limit,
        offset=args.offset,
        page_token=args.page_token,
    )
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("STATUS", no_wrap=True, min_width=10)
    table.add_column("CREATED", no_wrap=True, min_width=16)
    table.add_column("PROMPT", overflow="ellipsis", no_wrap=True)
    for generation in page.generations:
        table.add_row(
            generation.id,
            status_name(generation.status),
            _when(generation.create_time),
            Text(generation.original_prompt or generation.prompt),
        )
    out.console.print(table)
    footer = f"{len(page.generations)} of {page.total} (offset {page.offset})"
    if page.next_page_token:
        footer += f"; next page: --page-token {page.next_page_token}"
    out.line(footer)
    return EXIT_OK


def cmd_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`get ID`: one generation."""
    out.show(client.get_generation(args.id))
    return EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`watch ID`: each state as it comes (one JSON object per line with --json)."""
    for event in client.watch(args.id, since_revision=args.since_revision, follow=args.follow):
        if out.json_mode:
            out.json(event, compact=True)
        else:
            kind = generation_pb2.GenerationEventType.Name(event.type).removeprefix(
                "GENERATION_EVENT_TYPE_"
            )
            out.line(f"{kind:<8} {describe(event.generation)}")
    return EXIT_OK


def cmd_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`update ID`: change prompt, aspect ratio, flow or meta."""
    flow_id = flow_choice(args)
    meta = parse_meta(args.meta)
    if args.prompt is None and args.aspect_ratio is None and flow_id is None and meta is None:
        raise UsageError("update: give at least one of --prompt, --aspect-ratio, --flow-id, --meta")
    generation = client.update_generation(
        args.id, prompt=args.prompt, aspect_ratio=args.aspect_ratio, flow_id=flow_id, meta=meta
    )
    if out.json_mode:
        out.json(generation)
    else:
        out.line(describe(generation))
    return EXIT_OK


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`cancel ID`: stop a pending or processing generation."""
    out.show(client.cancel_generation(args.id))
    return EXIT_OK


def cmd_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`delete ID`: delete a generation."""
    deleted = client.delete_generation(args.id)
    if out.json_mode:
        out.json(deleted)
    else:
        kept = "" if deleted.image_deleted else " (its image was kept)"
        out.line(f"deleted generation {deleted.id}{kept}")
    return EXIT_OK


# --- images ---


def describe_image(image: image_pb2.Image) -> str:
    """A one-line summary of an image."""
    source = image_pb2.ImageSource.Name(image.source).removeprefix("IMAGE_SOURCE_")
    parts = [image.id, source, image.alias, image.mime_type, _size(image), image.url]
    return "  ".join(part for part in parts if part)


def cmd_upload(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`upload FILE`: store a picture."""
    try:
        image = client.upload_file(
            args.file,
            alias=args.alias,
            flow_id=flow_choice(args),
            flow_alias=args.flow_alias,
            meta=parse_meta(args.meta),
            request_id=args.request_id,
        )
    except OSError as error:
        raise UsageError(f"{args.file}: {error.strerror or error}") from error
    if args.quiet:
        out.line(image.id)
    elif out.json_mode:
        out.json(image)
    else:
        out.line(describe_image(image))
    return EXIT_OK


def cmd_download(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`download ID_OR_ALIAS OUT`: save an image's bytes."""
    downloaded = client.download(args.id_or_alias, args.out, flow_id=args.flow_id)
    if out.json_mode:
        sys.stdout.write(
            json.dumps(
                {
                    "path": str(downloaded.path),
                    "mimeType": downloaded.mime_type,
                    "size": downloaded.size,
                }
            )
            + "\n"
        )
    else:
        out.line(f"wrote {downloaded.path} ({downloaded.mime_type}, {downloaded.size} bytes)")
    return EXIT_OK


def cmd_alias(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`alias ID @name` / `alias ID --clear`: set or clear a project alias."""
    if args.clear == bool(args.alias):
        raise UsageError("alias: give either an @alias or --clear")
    image = client.set_image_alias(
        args.id, "" if args.clear else args.alias, reassign=args.reassign
    )
    if out.json_mode:
        out.json(image)
    else:
        out.line(describe_image(image))
    return EXIT_OK


def images_table(out: Output, page: image_pb2.ListImagesResponse) -> None:
    """A page of images as a table, with its paging footer."""
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("SOURCE", no_wrap=True)
    table.add_column("ALIAS", no_wrap=True)
    table.add_column("SIZE", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    for image in page.images:
        table.add_row(
            image.id,
            image_pb2.ImageSource.Name(image.source).removeprefix("IMAGE_SOURCE_"),
            Text(image.alias),
            _size(image),
            _when(image.create_time),
        )
    out.console.print(table)
    footer = f"{len(page.images)} of {page.total} (offset {page.offset})"
    if page.next_page_token:
        footer += f"; next page: --page-token {page.next_page_token}"
    out.line(footer)


def cmd_images_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`images [list]`: a table of images."""
    page = client.list_images(
        flow_id=getattr(args, "flow_id", ""),
        source=getattr(args, "source", None),
        alias=getattr(args, "alias", ""),
        limit=getattr(args, "limit", 0),
        offset=getattr(args, "offset", 0),
        page_token=getattr(args, "page_token", ""),
    )
    if out.json_mode:
        out.json(page)
    else:
        images_table(out, page)
    return EXIT_OK


def cmd_images_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`images get ID_OR_ALIAS`: one image."""
    out.show(client.get_image(args.id_or_alias, flow_id=args.flow_id))
    return EXIT_OK


def cmd_images_resolve(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`images resolve @alias`: what an alias names, and where it was found."""
    resolved = client.resolve_alias(args.alias, flow_id=args.flow_id)
    if out.json_mode:
        out.json(resolved)
    else:
        scope = image_pb2.AliasScope.Name(resolved.scope).removeprefix("ALIAS_SCOPE_")
        out.line(f"{args.alias} ({scope}) -> {describe_image(resolved.image)}")
    return EXIT_OK


def cmd_images_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`images update ID_OR_ALIAS`: focal point and meta."""
    focal = parse_focal_point(args.focal_point)
    meta = parse_meta(args.meta)
    if focal is None and meta is None:
        raise UsageError("images update: give --focal-point and/or --meta")
    out.show(client.update_image(args.id_or_alias, focal_point=focal, meta=meta))
    return EXIT_OK


def cmd_images_url(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`images url ID_OR_ALIAS`: a presigned URL."""
    reply = client.get_image_url(args.id_or_alias, ttl=args.ttl)
    if out.json_mode:
        out.json(reply)
    else:
        out.line(reply.url)
    return EXIT_OK


def cmd_images_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`images delete ID`: delete an image."""
    deleted = client.delete_image(args.id)
    if out.json_mode:
        out.json(deleted)
    else:
        out.line(f"deleted image {deleted.id}")
    return EXIT_OK


# --- flows ---


def cmd_live_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live [list]`: a table of live scopes."""
    page = client.list_live_scopes(
        limit=getattr(args, "limit", 0), offset=getattr(args, "offset", 0)
    )
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    table.add_column("SCOPE", no_wrap=True)
    table.add_column("NEW", justify="center")
    table.add_column("GENERATIONS", justify="right")
    table.add_column("LIMIT", justify="right")
    for scope in page.scopes:
        table.add_row(
            scope.slug,
            "yes" if scope.allow_new_generations else "no",
            str(scope.current_generations),
            str(scope.new_generations_limit),
        )
    out.console.print(table)
    return EXIT_OK


def _allow(args: argparse.Namespace) -> bool | None:
    return {"yes": True, "no": False}.get(getattr(args, "allow_new", None) or "")


def cmd_live_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live create SCOPE`: a new live scope."""
    out.show(
        client.create_live_scope(
            args.scope, allow_new_generations=_allow(args), new_generations_limit=args.limit
        )
    )
    return EXIT_OK


def cmd_live_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live get SCOPE`: one live scope."""
    out.show(client.get_live_scope(args.scope))
    return EXIT_OK


def cmd_live_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live update SCOPE`: change whether misses generate, or the cap."""
    if _allow(args) is None and args.limit is None:
        raise UsageError("live update: give --allow-new and/or --limit")
    out.show(
        client.update_live_scope(
            args.scope, allow_new_generations=_allow(args), new_generations_limit=args.limit
        )
    )
    return EXIT_OK


def cmd_live_regenerate(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live regenerate SCOPE [--image-id ID]`: regenerate one image or every image."""
    reply = client.regenerate_live_scope(args.scope, image_id=args.image_id)
    if out.json_mode:
        out.json(reply)
    else:
        for generation in reply.generations:
            out.line(generation.id)
    return EXIT_OK


def cmd_live_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live delete SCOPE`: delete the scope and its generations."""
    out.show(client.delete_live_scope(args.scope))
    return EXIT_OK


def cmd_live_url(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`live url SCOPE PROMPT --base URL --project SLUG`: print a live URL (no call made)."""
    out.line(
        live_url(
            args.base,
            args.project,
            args.scope,
            args.prompt,
            aspect_ratio=args.aspect_ratio,
            auto_enhance=args.enhance,
            template=args.template,
        )
    )
    return EXIT_OK


def cmd_flows_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows [list]`: a table of flows."""
    page = client.list_flows(
        limit=getattr(args, "limit", 0),
        offset=getattr(args, "offset", 0),
        page_token=getattr(args, "page_token", ""),
    )
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("GENERATIONS", justify="right")
    table.add_column("IMAGES", justify="right")
    table.add_column("ALIASES")
    table.add_column("UPDATED", no_wrap=True)
    for flow in page.flows:
        table.add_row(
            flow.id,
            str(flow.generation_count),
            str(flow.image_count),
            Text(" ".join(sorted(flow.aliases))),
            _when(flow.update_time),
        )
    out.console.print(table)
    out.line(f"{len(page.flows)} of {page.total} (offset {page.offset})")
    return EXIT_OK


def cmd_flows_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows get ID`: one flow."""
    out.show(client.get_flow(args.id))
    return EXIT_OK


def cmd_flows_generations(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows generations ID`: a flow's generations."""
    page = client.list_flow_generations(args.id, limit=args.limit, offset=args.offset)
    if out.json_mode:
        out.json(page)
    else:
        for generation in page.generations:
            out.line(describe(generation))
        out.line(f"{len(page.generations)} of {page.total}")
    return EXIT_OK


def cmd_flows_images(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows images ID`: a flow's images."""
    page = client.list_flow_images(args.id, limit=args.limit, offset=args.offset)
    if out.json_mode:
        out.json(page)
    else:
        images_table(out, page)
    return EXIT_OK


def cmd_flows_alias(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows alias ID @a=IMAGE …`: merge flow aliases."""
    aliases: dict[str, str] = {}
    for pair in args.pairs:
        alias, sep, image_id = pair.partition("=")
        if not sep or not alias or not image_id:
            raise UsageError(f"{pair!r}: expected @ALIAS=IMAGE_ID")
        aliases[alias] = image_id
    out.show(client.update_flow_aliases(args.id, aliases))
    return EXIT_OK


def cmd_flows_unalias(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows unalias ID @a`: remove a flow alias."""
    out.show(client.delete_flow_alias(args.id, args.alias))
    return EXIT_OK


def cmd_flows_regenerate(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows regenerate ID`: rerun the flow's latest generation."""
    generation = client.regenerate_flow(args.id)
    return wait_and_fetch(client, generation, args, out)


def cmd_flows_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`flows delete ID`: delete a flow."""
    deleted = client.delete_flow(args.id)
    if out.json_mode:
        out.json(deleted)
    else:
        out.line(
            f"deleted flow {deleted.id}: {deleted.generations_deleted} generations, "
            f"{deleted.images_deleted} images"
        )
    return EXIT_OK


# --- projects and keys (AdminService, admin key) ---


def cmd_projects_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`projects [list]`: a table of projects."""
    page = client.list_projects(limit=getattr(args, "limit", 0), offset=getattr(args, "offset", 0))
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("SLUG", no_wrap=True)
    table.add_column("NAME")
    table.add_column("CREATED", no_wrap=True)
    for project in page.projects:
        table.add_row(
            project.id, Text(project.slug), Text(project.name), _when(project.create_time)
        )
    out.console.print(table)
    out.line(f"{len(page.projects)} of {page.total}")
    return EXIT_OK


def cmd_projects_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`projects create SLUG`: a new project."""
    project = client.create_project(args.slug, name=args.name)
    if out.json_mode:
        out.json(project)
    else:
        out.line(f"created project {project.slug} ({project.id})")
    return EXIT_OK


def cmd_keys_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`keys [list]`: a table of API keys."""
    found = client.list_api_keys(project_id=getattr(args, "project_id", ""))
    if out.json_mode:
        out.json(found)
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("PREFIX", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("NAME")
    table.add_column("STATE", no_wrap=True)
    for key in found.keys:
        state = "revoked" if key.HasField("revoke_time") else "active"
        kind = "admin" if key.admin else f"project {key.project_id}"
        table.add_row(key.id, key.prefix, kind, Text(key.name), state)
    out.console.print(table)
    return EXIT_OK


def cmd_keys_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`keys create`: a new key; the secret goes to stdout, alone."""
    issued = client.create_api_key(
        project_id=args.project_id, name=args.name, expire_days=args.expire_days
    )
    if out.json_mode:
        out.json(issued)
    else:
        kind = "admin key" if issued.key.admin else f"key for project {issued.key.project_id}"
        out.err.print(Text(f"created {kind} {issued.key.id}; its secret is shown only now:"))
        out.line(issued.api_key)
    return EXIT_OK


def cmd_keys_revoke(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`keys revoke ID`: revoke a key."""
    key = client.revoke_api_key(args.id)
    if out.json_mode:
        out.json(key)
    else:
        out.line(f"revoked key {key.id} ({key.prefix}…)")
    return EXIT_OK


# --- the parser ---


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--address/--api-key/--timeout/--json, accepted before and after the command.

    The copies on sub-commands default to SUPPRESS, so that a value given
    before the command is not reset by the sub-command's own default.
    """

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--address",
        default=default(None),
        help=f"server host:port (${ADDRESS_ENV}, default {DEFAULT_ADDRESS})",
    )
    group.add_argument("--api-key", default=default(None), help=f"API key (${API_KEY_ENV})")
    group.add_argument(
        "--timeout",
        type=float,
        default=default(DEFAULT_TIMEOUT),
        help=f"deadline of each call in seconds, retries included (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the reply as protobuf JSON (one object per line for watch)",
    )


def _flow_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    flow = parser.add_mutually_exclusive_group()
    flow.add_argument("--flow-id", help=f"put the {what} in this flow (default: a new flow)")
    flow.add_argument("--no-flow", action="store_true", help=f"put the {what} in no flow")


def _quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the ID (for a shell variable: ID=$(imagegen … -q))",
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    _quiet_option(parser)
    parser.add_argument(
        "--wait", action="store_true", help="follow the generation until it ends (live status)"
    )
    parser.add_argument(
        "--out", type=Path, help="write the output image here once it succeeds (implies --wait)"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        help=f"give up waiting after this many seconds (default {DEFAULT_WAIT_TIMEOUT:g})",
    )


def _paging(parser: argparse.ArgumentParser, *, token: bool = True) -> None:
    parser.add_argument("--limit", type=int, default=0, help="page size (default 20, at most 100)")
    parser.add_argument("--offset", type=int, default=0, help="results to skip")
    if token:
        parser.add_argument("--page-token", default="", help="next page token of a previous list")


def build_parser(other_commands: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The client commands' parser; ``other_commands`` are listed in its help."""
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    parser = argparse.ArgumentParser(
        prog="imagegen",
        description="Client commands of the imagegen service (they call a running server).",
        epilog=other_commands_help(other_commands) + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="client commands")

    def command(
        parent: Any, name: str, handler: Handler, help_text: str, **kwargs: Any
    ) -> argparse.ArgumentParser:
        child: argparse.ArgumentParser = parent.add_parser(
            name, parents=[common], help=help_text, description=help_text, **kwargs
        )
        child.set_defaults(handler=handler)
        return child

    gen = command(sub, "generate", cmd_generate, "create a generation from a prompt")
    gen.add_argument("prompt", help="what to draw")
    gen.add_argument("--aspect-ratio", default="", help="1:1 (default), 16:9, 9:16, 3:2 or 21:9")
    gen.add_argument(
        "--ref", action="append", metavar="REF", help="reference image ID or @alias (repeatable)"
    )
    gen.add_argument("--alias", default="", help="project alias for the output image (@name)")
    gen.add_argument("--flow-alias", default="", help="flow alias for the output image (@name)")
    _flow_options(gen, what="generation")
    gen.add_argument("--no-enhance", action="store_true", help="skip prompt enhancement")
    gen.add_argument(
        "--template", default="", help="enhancement template (general, photorealistic, …)"
    )
    gen.add_argument(
        "--model",
        default="",
        help="provider/model, e.g. openai/gpt-image-1, gemini/gemini-2.5-flash-image, or local "
        "(default: the server's)",
    )
    gen.add_argument("--seed", type=int, help="seed for repeatable pictures (0 to 2147483647)")
    gen.add_argument("--negative", default="", help="what the picture should not show")
    gen.add_argument(
        "--format", default="", dest="output_format", help="png, jpeg or webp (default: server's)"
    )
    gen.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (repeatable)")
    gen.add_argument(
        "--run-timeout",
        type=float,
        metavar="SECONDS",
        help="queue plus run time allowed; then FAILED with DEADLINE_EXCEEDED",
    )
    gen.add_argument("--webhook", default="", metavar="URL", help="POST a signed webhook here")
    gen.add_argument(
        "--webhook-event",
        action="append",
        choices=("processing", "completed"),
        help="which events the webhook gets (repeatable; default: completed)",
    )
    gen.add_argument("--request-id", help="idempotency key (default: a fresh one)")
    _wait_options(gen)

    lst = command(sub, "list", cmd_list, "list generations, newest first")
    lst.add_argument(
        "--status", type=str.lower, choices=STATUS_CHOICES, help="only generations in this status"
    )
    lst.add_argument("--flow-id", default="", help="only this flow's generations")
    _paging(lst)

    command(sub, "get", cmd_get, "show one generation").add_argument("id")
    command(sub, "cancel", cmd_cancel, "cancel a pending or processing generation").add_argument(
        "id"
    )

    watch = command(sub, "watch", cmd_watch, "stream a generation's states as they change")
    watch.add_argument("id")
    watch.add_argument("--follow", action="store_true", help="stay open across regenerations")
    watch.add_argument("--since-revision", type=int, default=0, help="skip states up to this one")

    wait = command(sub, "wait", cmd_wait, "wait for a generation to finish (live status)")
    wait.add_argument("id")
    wait.add_argument("--out", type=Path, help="write the output image here once it succeeds")
    wait.add_argument(
        "--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT, help="give up after seconds"
    )
    _quiet_option(wait)

    regen = command(sub, "regenerate", cmd_regenerate, "run a generation again")
    regen.add_argument("id")
    regen.add_argument("--request-id", help="idempotency key (default: a fresh one)")
    _wait_options(regen)

    upd = command(sub, "update", cmd_update, "change a generation (prompt/ratio run it again)")
    upd.add_argument("id")
    upd.add_argument("--prompt")
    upd.add_argument("--aspect-ratio")
    flow = upd.add_mutually_exclusive_group()
    flow.add_argument("--flow-id", help="move the generation to this flow")
    flow.add_argument("--no-flow", action="store_true", help="detach it from its flow")
    upd.add_argument("--meta", action="append", metavar="KEY=VALUE", help="new metadata")

    command(
        sub, "delete", cmd_delete, "delete a generation (and its unaliased image)"
    ).add_argument("id")

    upl = command(sub, "upload", cmd_upload, "upload a PNG, JPEG or WebP picture")
    upl.add_argument("file", type=Path)
    upl.add_argument("--alias", default="", help="project alias (@name)")
    upl.add_argument("--flow-alias", default="", help="flow alias (@name)")
    _flow_options(upl, what="image")
    upl.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (repeatable)")
    upl.add_argument("--request-id", help="idempotency key (default: a fresh one)")
    _quiet_option(upl)

    down = command(sub, "download", cmd_download, "save an image's bytes to a file")
    down.add_argument("id_or_alias", metavar="ID_OR_ALIAS")
    down.add_argument("out", type=Path, metavar="OUT")
    down.add_argument("--flow-id", default="", help="flow context for flow/technical aliases")

    alias = command(sub, "alias", cmd_alias, "set or clear an image's project alias")
    alias.add_argument("id", help="image ID")
    alias.add_argument("alias", nargs="?", default="", help="@name")
    alias.add_argument("--reassign", action="store_true", help="move the alias if it is taken")
    alias.add_argument("--clear", action="store_true", help="remove the image's alias")

    images = command(sub, "images", cmd_images_list, "list and manage images (default: list)")
    images_sub = images.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    il = command(images_sub, "list", cmd_images_list, "list images, newest first")
    il.add_argument("--flow-id", default="")
    il.add_argument(
        "--source", type=str.lower, choices=("generated", "uploaded"), help="only this source"
    )
    il.add_argument("--alias", default="", help="only the image holding this alias")
    _paging(il)
    ig = command(images_sub, "get", cmd_images_get, "show one image")
    ig.add_argument("id_or_alias", metavar="ID_OR_ALIAS")
    ig.add_argument("--flow-id", default="")
    ir = command(images_sub, "resolve", cmd_images_resolve, "resolve an alias")
    ir.add_argument("alias")
    ir.add_argument("--flow-id", default="")
    iu = command(images_sub, "update", cmd_images_update, "change focal point or metadata")
    iu.add_argument("id_or_alias", metavar="ID_OR_ALIAS")
    iu.add_argument("--focal-point", metavar="X,Y", help="fractions of width and height")
    iu.add_argument("--meta", action="append", metavar="KEY=VALUE")
    iurl = command(images_sub, "url", cmd_images_url, "print a presigned URL of the bytes")
    iurl.add_argument("id_or_alias", metavar="ID_OR_ALIAS")
    iurl.add_argument("--ttl", type=float, help="seconds the URL stays valid")
    command(images_sub, "delete", cmd_images_delete, "delete an image").add_argument("id")

    live = command(sub, "live", cmd_live_list, "list and manage live scopes (default: list)")
    live_sub = live.add_subparsers(dest="live_command", metavar="SUBCOMMAND")
    _paging(command(live_sub, "list", cmd_live_list, "list live scopes"), token=False)
    for name, handler, text in (
        ("create", cmd_live_create, "create a live scope"),
        ("update", cmd_live_update, "change a live scope"),
    ):
        scope_cmd = command(live_sub, name, handler, text)
        scope_cmd.add_argument("scope", metavar="SCOPE")
        scope_cmd.add_argument(
            "--allow-new", choices=("yes", "no"), help="whether misses may generate"
        )
        scope_cmd.add_argument("--limit", type=int, help="how many generations the scope holds")
    command(live_sub, "get", cmd_live_get, "show a live scope").add_argument("scope")
    lre = command(live_sub, "regenerate", cmd_live_regenerate, "regenerate a scope's images")
    lre.add_argument("scope")
    lre.add_argument("--image-id", default="", help="only this image (default: all)")
    command(live_sub, "delete", cmd_live_delete, "delete a scope").add_argument("scope")
    lurl = command(live_sub, "url", cmd_live_url, "print the live URL of a prompt")
    lurl.add_argument("scope")
    lurl.add_argument("prompt")
    lurl.add_argument("--base", required=True, help="the gateway's public base URL")
    lurl.add_argument("--project", required=True, help="the project's slug")
    lurl.add_argument("--aspect-ratio", default="")
    lurl.add_argument("--enhance", action="store_true", help="enhance the prompt first")
    lurl.add_argument("--template", default="")

    flows = command(sub, "flows", cmd_flows_list, "list and manage flows (default: list)")
    flows_sub = flows.add_subparsers(dest="flows_command", metavar="SUBCOMMAND")
    _paging(command(flows_sub, "list", cmd_flows_list, "list flows, newest first"))
    command(flows_sub, "get", cmd_flows_get, "show one flow").add_argument("id")
    fg = command(flows_sub, "generations", cmd_flows_generations, "list a flow's generations")
    fg.add_argument("id")
    _paging(fg, token=False)
    fi = command(flows_sub, "images", cmd_flows_images, "list a flow's images")
    fi.add_argument("id")
    _paging(fi, token=False)
    fa = command(flows_sub, "alias", cmd_flows_alias, "merge flow aliases")
    fa.add_argument("id")
    fa.add_argument("pairs", nargs="+", metavar="@ALIAS=IMAGE_ID")
    fu = command(flows_sub, "unalias", cmd_flows_unalias, "remove a flow alias")
    fu.add_argument("id")
    fu.add_argument("alias")
    fr = command(flows_sub, "regenerate", cmd_flows_regenerate, "rerun the latest generation")
    fr.add_argument("id")
    _wait_options(fr)
    command(flows_sub, "delete", cmd_flows_delete, "delete a flow").add_argument("id")

    projects = command(sub, "projects", cmd_projects_list, "projects (admin key; default: list)")
    projects_sub = projects.add_subparsers(dest="projects_command", metavar="SUBCOMMAND")
    _paging(command(projects_sub, "list", cmd_projects_list, "list projects"), token=False)
    pc = command(projects_sub, "create", cmd_projects_create, "create a project")
    pc.add_argument("slug")
    pc.add_argument("--name", default="", help="display name (default: the slug)")

    keys = command(sub, "keys", cmd_keys_list, "API keys (admin key; default: list)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    kl = command(keys_sub, "list", cmd_keys_list, "list API keys (never their secrets)")
    kl.add_argument("--project-id", default="", help="only this project's keys")
    kc = command(keys_sub, "create", cmd_keys_create, "create an API key (secret shown once)")
    kc.add_argument("--project-id", default="", help="the key's project (omit: an admin key)")
    kc.add_argument("--name", default="", help="a label for people")
    kc.add_argument("--expire-days", type=int, default=0, help="days until it expires (0: never)")
    command(keys_sub, "revoke", cmd_keys_revoke, "revoke an API key").add_argument("id")
    return parser


def exit_code(error: ImagegenError) -> int:
    """The exit code of a failed call."""
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return EXIT_UNAVAILABLE
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EXIT_TIMEOUT
    return EXIT_API_ERROR


def main(argv: list[str] | None = None, *, other_commands: Sequence[str] = ()) -> int:
    """Run one client command; returns the exit code (see the module docstring)."""
    parser = build_parser(other_commands)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exited:  # argparse: --help (0) or a usage error (2)
        return exited.code if isinstance(exited.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = Output(json_mode=args.json)
    try:
        with Client(args.address, args.api_key, timeout=args.timeout) as client:
            return handler(client, args, out)
    except ImagegenError as error:
        out.err.print(Text(f"imagegen: {error}"))
        return exit_code(error)
    except UsageError as error:
        out.err.print(Text(f"imagegen: {error}"))
        return EXIT_USAGE
    except OSError as error:  # a file to read or write (upload, download --out)
        out.err.print(Text(f"imagegen: {error}"))
        return EXIT_USAGE
    except KeyboardInterrupt:
        out.err.print(Text("imagegen: interrupted"))
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
