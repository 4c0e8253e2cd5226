"""The ``celsync`` command line (SPEC §10)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import click

from celsync.config import Config, ConfigError, load_config


class AppContext:
    """What every command needs, built on first use so `--help` never touches a database."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._pipeline = None
        self._store = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config

    @property
    def pipeline(self):
        if self._pipeline is None:
            from celsync.pipeline import Pipeline

            self._pipeline = Pipeline(self.config)
            self._store = self._pipeline.store
        return self._pipeline

    @property
    def store(self):
        if self._store is None:
            from celsync.state.store import StateStore

            self._store = StateStore(self.config.state.url)
            self._store.ensure_ready()
        return self._store

    @property
    def zone(self):
        name = self.config.source.timezone
        return ZoneInfo(name) if name else datetime.now().astimezone().tzinfo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="CELSYNC_CONFIG", default="config.yaml", show_default=True,
              help="YAML configuration file (env CELSYNC_CONFIG).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: int) -> None:
    """Asterisk CEL to correct, idempotent CRM call records."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = AppContext(config_path)


def _fail_on_error(fn):
    """Turn expected operational errors into one clear line and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ConfigError, ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            from celsync.cel.columns import SourceError
            from celsync.state.store import StateError

            if isinstance(exc, (SourceError, StateError)):
                raise click.ClickException(str(exc)) from None
            if isinstance(exc, SQLAlchemyError):
                first = str(exc).splitlines()[0]
                raise click.ClickException(f"database error ({exc.__class__.__name__}): {first}") from None
            raise

    return wrapper


@main.command()
@click.pass_obj
@_fail_on_error
def poll(app: AppContext) -> None:
    """One pass for cron: read new rows, close finished calls, deliver. Non-zero exit on failure."""
    pipeline = app.pipeline
    try:
        stats = pipeline.poll()
    finally:
        pipeline.close()
    _summary(stats)
    if stats.failed or stats.delivery_failures:
        sys.exit(1)


def _summary(stats) -> None:
    unknown = ", ".join(f"{k}×{v}" for k, v in sorted(stats.unknown_events.items()))
    click.echo(
        f"celsync: {stats.rows} rows read, {stats.calls} calls closed, {stats.records} records "
        f"({stats.enqueued} queued for delivery, {stats.unchanged} unchanged), {stats.delivered} delivered, "
        f"{stats.delivery_failures} delivery failures, {stats.quarantined} rows quarantined, "
        f"{stats.open_calls} calls still open, cursor at id {stats.position}"
        + (f"; unknown event types kept: {unknown}" if unknown else ""),
        err=True,
    )


@main.command()
@click.option("--interval", type=float, default=None, help="Seconds between polls (default source.poll_interval).")
@click.pass_obj
@_fail_on_error
def run(app: AppContext, interval: float | None) -> None:
    """Poll in a loop and deliver continuously; stops cleanly on SIGTERM/SIGINT."""
    log = logging.getLogger("celsync")
    stop = threading.Event()

    def _stop(signum, _frame):
        log.warning("signal %d: finishing the current step and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    pipeline = app.pipeline
    cfg = app.config
    if cfg.metrics.port:
        pipeline.metrics.serve(cfg.metrics.port, cfg.metrics.address)
    pipeline.recover()
    workers = pipeline.engine.start(stop)
    pause = cfg.source.poll_interval if interval is None else interval
    failures = 0
    try:
        while not stop.is_set():
            try:
                pipeline.poll(deliver=False)
                failures = 0
            except Exception as exc:  # the source may be down for a while: keep trying
                failures += 1
                log.error("poll failed (%s); retrying in %.0f s", exc, min(60.0, pause * 2 ** failures))
                stop.wait(min(60.0, pause * 2 ** failures))
                continue
            stop.wait(pause)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        pipeline.close()


@main.command()
@click.option("--from", "t_from", required=True, help="Start: ISO-8601 date or datetime (source timezone unless an offset is given).")
@click.option("--to", "t_to", required=True, help="End: ISO-8601 date (the whole day) or datetime.")
@click.option("--sink", "sinks", multiple=True, help="Only these sinks (repeatable); default all.")
@click.option("--force", is_flag=True, help="Re-send records even if the ledger says they are unchanged.")
@click.option("--dry-run", is_flag=True, help="Print the records as JSON lines; commit and send nothing.")
@click.pass_obj
@_fail_on_error
def reprocess(app: AppContext, t_from: str, t_to: str, sinks: tuple[str, ...], force: bool, dry_run: bool) -> None:
    """Replay every call with a row in a period through the same rules and sinks."""
    from celsync.pipeline import parse_when, period_end

    start, end = parse_when(t_from, app.zone), period_end(t_to, app.zone)
    if end < start:
        raise click.BadParameter("--to is before --from")
    pipeline = app.pipeline
    known = {s.name for s in pipeline.sinks}
    unknown = [s for s in sinks if s not in known]
    if unknown:
        raise click.BadParameter(f"unknown sink(s) {', '.join(unknown)}; configured: {', '.join(sorted(known))}")
    span = pipeline.source.id_range(start, end)
    total = (span[1] - span[0] + 1) if span else 0
    try:
        with click.progressbar(length=total, label="reprocessing", file=sys.stderr) as bar:
            stats, results = pipeline.reprocess(start, end, sinks=list(sinks) or None, force=force,
                                                dry_run=dry_run, progress=bar.update)
    finally:
        pipeline.close()
    if dry_run:
        for result in results:
            for record in result.records:
                click.echo(json.dumps(record.to_dict(), ensure_ascii=False))
    _summary(stats)
    if stats.failed or stats.delivery_failures:
        sys.exit(1)


@main.command()
@click.argument("call_id")
@click.pass_obj
@_fail_on_error
def explain(app: AppContext, call_id: str) -> None:
    """Show a call's legs on a timeline and the rule trace behind every record."""
    from celsync.explain import render

    pipeline = app.pipeline
    try:
        result = pipeline.explain(call_id)
    finally:
        pipeline.close()
    if result is None:
        raise click.ClickException(f"no CEL rows with linkedid or uniqueid {call_id!r} in {app.config.source.table}")
    click.echo(render(result))


@main.command()
@click.pass_obj
@_fail_on_error
def status(app: AppContext) -> None:
    """Cursor, lag, open work and per-sink delivery state."""
    from celsync.explain import render_status

    store = app.store
    source = None
    try:
        from celsync.cel.source import CelSource

        source = CelSource(app.config.source)
        max_id = source.max_id()
    except Exception as exc:  # status must work while the source is down
        max_id = None
        click.echo(f"source: unreachable ({exc.__class__.__name__}: {exc})", err=True)
    finally:
        if source is not None:
            source.close()
    click.echo(render_status(store.status(), max_id))


@main.command()
@click.pass_obj
@_fail_on_error
def doctor(app: AppContext) -> None:
    """Check the CEL source: table, columns, extra, indexes, enabled events, clock skew, lag."""
    from celsync.cel.doctor import run_doctor

    cursor = None
    try:
        cursor = app.store.load_cursor(f"{app.config.source.url.split('://', 1)[0]}:{app.config.source.table}")
    except Exception:  # the state DB is optional for doctor
        cursor = None
    findings = run_doctor(app.config.source, cursor_id=cursor.last_id if cursor else None)
    worst = 0
    for f in findings:
        mark = {"ok": "ok  ", "warn": "WARN", "error": "FAIL"}.get(f.level, f.level)
        click.echo(f"[{mark}] {f.message}" + (f"\n       fix: {f.fix}" if f.fix else ""))
        worst = max(worst, {"ok": 0, "warn": 0, "error": 1}.get(f.level, 0))
    sys.exit(worst)


@main.group()
def db() -> None:
    """celsync's own state database."""


@db.command("upgrade")
@click.pass_obj
@_fail_on_error
def db_upgrade(app: AppContext) -> None:
    """Create or migrate the state tables (Alembic) to the current version."""
    from celsync.state.store import StateStore

    StateStore(app.config.state.url).upgrade()
    click.echo(f"state database at {app.config.state.url.split('@')[-1]} is up to date")


def _register_groups() -> None:
    from celsync.deadletters import deadletters
    from celsync.feed import feed

    main.add_command(deadletters)
    main.add_command(feed)


_register_groups()

if __name__ == "__main__":  # pragma: no cover
    main()
