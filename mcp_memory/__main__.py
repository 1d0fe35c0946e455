"""The command line: `mcp-memory` runs the server on stdio; a few admin commands share its options."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_memory import __version__
from mcp_memory.config import EMBEDDER_KINDS, Config, env_values, listed, load_configuration_file
from mcp_memory.errors import MemoryServerError, ValidationFailed

if TYPE_CHECKING:
    from mcp_memory.services.transfer import Progress

log = logging.getLogger("mcp_memory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-memory",
        description="An MCP server that gives LLM clients a long memory (stdio by default).",
    )
    parser.add_argument("--version", action="version", version=f"mcp-memory {__version__}")
    parser.add_argument(
        "--db",
        help="database file, or a postgresql:// URL (env MCP_MEMORY_DB; default: a file in the user data dir)",
    )
    parser.add_argument("--embedder", choices=EMBEDDER_KINDS, help="env MCP_MEMORY_EMBEDDER; default local")
    parser.add_argument("--config", type=Path, help="JSON file with the base session configuration")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (env MCP_MEMORY_LOG_LEVEL)")
    parser.add_argument(
        "--transport", choices=("stdio", "streamable-http"), default="stdio", help="default stdio"
    )
    parser.add_argument(
        "--http", action="store_true", default=None,
        help="serve over streamable HTTP (at /mcp) instead of stdio (env MCP_MEMORY_HTTP=1)",
    )  # fmt: skip
    http = parser.add_argument_group("serving over HTTP (each also an MCP_MEMORY_* variable: see the README)")
    http.add_argument("--host", help="address to bind (default 127.0.0.1; others need authentication)")
    http.add_argument("--port", type=int, help="default 8765")
    http.add_argument(
        "--stateless", action="store_true", default=None, help="no MCP sessions (replicas behind a balancer)"
    )
    http.add_argument(
        "--allowed-hosts", help="more Host header values to accept, comma-separated (a proxy's)"
    )
    http.add_argument("--allowed-origins", help="more Origin values to accept, comma-separated")
    http.add_argument("--public-url", help="the URL clients reach the server at (a proxy's), without /mcp")
    http.add_argument(
        "--session-idle-timeout", type=float, help="seconds without a request before a session ends (1800)"
    )
    http.add_argument("--tokens-file", type=Path, help="bearer tokens (hashed), see `mcp-memory token`")
    http.add_argument("--jwt-issuer", help="accept JWT access tokens from this issuer (its URL)")
    http.add_argument("--jwt-audience", help="the audience they must name (default: this server's /mcp URL)")
    http.add_argument("--jwt-jwks-url", help="the issuer's keys (default: from its metadata)")
    token = parser.add_argument_group(
        "token: make a bearer token, print it once, add its digest to --tokens-file"
    )
    token.add_argument("--principal", help="who the token speaks for")
    token.add_argument("--scopes", default="read,write", help="read, write and/or admin (default read,write)")
    token.add_argument("--expires", help="when it stops working: an ISO date, or a span like 90d or 12h")
    parser.add_argument(
        "command", nargs="?",
        choices=("serve", "stats", "reindex", "maintain", "export", "import", "copy", "token"),
        default="serve",
        help="serve (default), stats (print statistics as JSON), reindex (re-embed every memory), "
        "maintain (run the maintenance pass now and print its report), export (write memory as JSON Lines), "
        "import FILE (read an export or a server-memory file back), copy (--from DB --to DB: move a whole "
        "memory between SQLite and PostgreSQL, checked by counts and checksums), token (--tokens-file F "
        "--principal P [--scopes] [--group G ...] [--expires]: a bearer token for serving over HTTP)",
    )  # fmt: skip
    parser.add_argument("file", nargs="?", type=Path, help="import: the file to read")
    parser.add_argument(
        "--group", action="append",
        help="export: only this group (repeat for more); import: only this group of an export, or the group "
        "a server-memory file goes into (default memory); token: a group it may use (repeat; * for every one)",
    )  # fmt: skip
    parser.add_argument(
        "--out", default="-", help="export: the file to write (replaced whole), or - for stdout"
    )
    parser.add_argument(
        "--from", dest="source", help="copy: the database to copy (a file, or a postgresql:// URL)"
    )
    parser.add_argument("--to", dest="target", help="copy: the database to copy into (made if missing)")
    return parser


def _config(args: argparse.Namespace) -> Config:
    base = load_configuration_file(args.config) if args.config else None
    return Config.from_env(
        db_path=args.db, embedder=args.embedder, log_level=args.log_level, base_configuration=base
    )


def _setup_logging(level: str) -> None:
    """Everything to stderr: on stdio, stdout carries only the protocol."""
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def limit_blas_threads() -> None:
    """One BLAS thread unless told otherwise; must run before numpy is imported.

    On two cores shared with the LLM client, two BLAS threads fight for the core the client
    holds (query p95 in the hundreds of ms, measured); one thread stays steady.
    """
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def main(argv: Sequence[str] | None = None) -> None:
    limit_blas_threads()
    args = _parser().parse_args(argv)
    try:
        _check_transfer_arguments(args)
        config = _config(args)
        _setup_logging(config.log_level)
        if args.command == "stats":
            print(json.dumps(asyncio.run(_stats(config)), indent=2, default=str))
        elif args.command == "reindex":
            print(json.dumps(asyncio.run(_reindex(config)), indent=2))
        elif args.command == "maintain":
            print(json.dumps(asyncio.run(_maintain(config)), indent=2))
        elif args.command == "export":
            report = json.dumps(asyncio.run(_export(config, args)), indent=2)
            print(report, file=sys.stderr if args.out == "-" else sys.stdout)
        elif args.command == "import":
            print(json.dumps(asyncio.run(_import(config, args)), indent=2))
        elif args.command == "token":
            _token(args)
        elif args.command == "copy":
            copied = asyncio.run(_copy(config, args))
            print(json.dumps(copied, indent=2))
            if not copied["verified"]:
                raise SystemExit(1)
        else:
            _serve(config, args)
    except BaseException as exc:  # noqa: BLE001 - the one place that turns our errors into an exit
        error = _our_error(exc)
        if error is None:
            raise
        print(f"mcp-memory: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _our_error(exc: BaseException) -> MemoryServerError | None:
    """Our error, also when a task group wrapped it in an exception group."""
    if isinstance(exc, MemoryServerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _our_error(inner)) is not None:
                return found
    return None


def _serve(config: Config, args: argparse.Namespace) -> None:
    from mcp_memory.server import build_server

    over_http = args.http or args.transport == "streamable-http"
    if over_http or (
        args.http is None and env_values(os.environ, {"http": ("MCP_MEMORY_HTTP", "flag")}).get("http")
    ):
        from mcp_memory.server.http import HttpOptions, serve_http

        options = HttpOptions.from_env(
            host=args.host, port=args.port, stateless=args.stateless,
            allowed_hosts=None if args.allowed_hosts is None else listed(args.allowed_hosts),
            allowed_origins=None if args.allowed_origins is None else listed(args.allowed_origins),
            public_url=args.public_url, session_idle_timeout_s=args.session_idle_timeout,
            tokens_file=args.tokens_file, jwt_issuer=args.jwt_issuer, jwt_audience=args.jwt_audience,
            jwt_jwks_url=args.jwt_jwks_url,
        )  # fmt: skip
        log.info(
            "mcp-memory %s serving %s at %s (%s)", __version__, config.database, options.resource_url,
            "authenticated" if options.authenticated else "no authentication: loopback only",
        )  # fmt: skip
        serve_http(config, options)
        return
    server = build_server(config)
    # a line per request is for a shared server's operator; on stdio the one client's log would fill with them
    logging.getLogger("mcp_memory.requests").setLevel(logging.WARNING)
    log.info("mcp-memory %s serving %s on stdio", __version__, config.database)
    server.run("stdio")


def _token(args: argparse.Namespace) -> None:
    from mcp_memory.server.auth.tokens import add_token

    if args.tokens_file is None or not args.principal:
        raise ValidationFailed(
            "token needs --tokens-file FILE and --principal NAME (and --group for its groups)"
        )
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    token, entry = add_token(
        args.tokens_file, args.principal, scopes, args.group or [], _expiry(args.expires)
    )
    print(json.dumps({"token": token, **entry}, indent=2))
    print(
        f"The token is shown once; {args.tokens_file} keeps only its SHA-256. Clients send it as "
        "Authorization: Bearer <token>.",
        file=sys.stderr,
    )


def _expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    spans = {"d": 86_400, "h": 3_600, "m": 60}
    if value[:-1].isdigit() and value[-1] in spans:
        return datetime.now(UTC) + timedelta(seconds=int(value[:-1]) * spans[value[-1]])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"--expires {value!r}: give an ISO date (2027-06-30) or a span (90d, 12h)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _stats(config: Config) -> dict[str, object]:
    from mcp_memory.manager import MemoryManager

    async with MemoryManager(config) as manager:
        return (await manager.upkeep.stats()).model_dump(mode="json")


async def _maintain(config: Config) -> dict[str, object]:
    from mcp_memory.manager import MemoryManager

    async with MemoryManager(config) as manager:
        return (await manager.upkeep.maintain(trigger="on_demand")).model_dump(mode="json")


async def _reindex(config: Config) -> dict[str, object]:
    from mcp_memory.manager import MemoryManager

    manager = MemoryManager(config)
    await manager.start(check_embedder=False)
    try:
        return await manager.upkeep.reindex()
    finally:
        await manager.shutdown()


def _check_transfer_arguments(args: argparse.Namespace) -> None:
    if args.command == "copy" and not (args.source and args.target):
        raise ValidationFailed("copy needs both databases: mcp-memory copy --from DB --to DB")
    if args.command != "copy" and (args.source or args.target):
        raise ValidationFailed(f"--from and --to are for copy, not {args.command}")
    if args.command == "import" and args.file is None:
        raise ValidationFailed("import needs the file to read: mcp-memory import --db PATH FILE")
    if args.command != "import" and args.file is not None:
        raise ValidationFailed(f"{args.command} takes no file; to write one, use export --out FILE")
    if args.command == "import" and len(args.group or []) > 1:
        raise ValidationFailed(
            "import takes one --group: the group of the export to import, or to import into"
        )
    if args.group and args.command not in ("export", "import", "token"):
        raise ValidationFailed(f"--group is for export, import and token, not {args.command}")
    if args.command != "token" and args.principal:
        raise ValidationFailed(f"--principal is for token, not {args.command}")


async def _progress(progress: Progress) -> None:
    print(f"mcp-memory: {progress.message}", file=sys.stderr, flush=True)


async def _export(config: Config, args: argparse.Namespace) -> dict[str, object]:
    from mcp_memory.manager import MemoryManager

    target = sys.stdout if args.out == "-" else Path(args.out).absolute()
    async with MemoryManager(config) as manager:
        result = await manager.transfer.export_memories(
            target, args.group, overwrite=True, progress=_progress
        )
    return result.model_dump(mode="json")


async def _import(config: Config, args: argparse.Namespace) -> dict[str, object]:
    from mcp_memory.manager import MemoryManager

    group = args.group[0] if args.group else None
    async with MemoryManager(config) as manager:
        result = await manager.transfer.import_memories(args.file.absolute(), group, progress=_progress)
    return result.model_dump(mode="json")


async def _copy(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Export the source to a temporary file, import it into the target (idempotent: a copy cut short is
    finished by running it again), then compare the copied groups on both sides by counts and checksums."""
    import dataclasses
    import tempfile

    from mcp_memory.config import database_location
    from mcp_memory.manager import MemoryManager
    from mcp_memory.services.transfer import Progress
    from mcp_memory.transfer.digest import digest, missing

    def at(location: str) -> Config:
        return dataclasses.replace(config, **{"db_url": None, **database_location(location)})

    source, target = at(args.source), at(args.target)
    if source.database == target.database:
        raise ValidationFailed("--from and --to name the same database; name two")
    async with MemoryManager(source) as origin, MemoryManager(target) as copy:
        with tempfile.TemporaryDirectory(prefix="mcp-memory-copy-") as folder:
            path = Path(folder) / "copy.jsonl"
            exported = await origin.transfer.export_memories(path, progress=_progress)
            imported = await copy.transfer.import_memories(path, progress=_progress)
        groups = await asyncio.to_thread(origin.store.export_group_ids)
        await _progress(Progress(0, None, f"verifying {len(groups)} groups"))
        before = await asyncio.to_thread(_records, origin.store, groups)
        after = await asyncio.to_thread(_records, copy.store, groups)
    source_sums, target_sums = digest(before), digest(after)
    lost = missing(before, after)
    return {
        "from": source.database,
        "to": target.database,
        "exported": exported.model_dump(mode="json"),
        "imported": imported.model_dump(mode="json"),
        "source": source_sums,
        "target": target_sums,
        "missing_in_target": lost,
        "verified": lost == 0 and source_sums == target_sums,
    }


def _records(store: Any, groups: list[str]) -> list[tuple[str, dict[str, Any]]]:
    with contextlib.closing(store.export_records(groups)) as rows:
        return [row for row in rows if row[0] != "counts"]


if __name__ == "__main__":
    main()
