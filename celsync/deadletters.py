"""``celsync deadletters``: see and retry what a sink gave up on; re-enable disabled sinks.

The main CLI adds this group and puts a loader in ``ctx.obj`` with ``.store`` (a StateStore)
and ``.config`` (celsync.config.Config).
"""

from __future__ import annotations

from datetime import datetime, timezone

import click

from celsync.state.store import StateError, StateStore


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _store(ctx: click.Context, sink: str | None) -> StateStore:
    """The ready store; ``sink`` must be configured or at least known to the ledger."""
    store: StateStore = ctx.obj.store
    try:
        store.ensure_ready()
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if sink is not None:
        configured = [c.sink_name for c in ctx.obj.config.sinks]
        if sink not in configured and sink not in store.status()["sinks"]:
            raise click.BadParameter(
                f"no sink named {sink!r}; configured: {', '.join(configured) or 'none'}",
                param_hint="--sink",
            )
    return store


@click.group("deadletters")
def deadletters() -> None:
    """Records a sink gave up on, and sinks their destination disabled."""


@deadletters.command("list")
@click.option("--sink", help="Only this sink (its config 'name', or its type).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def list_dead(ctx: click.Context, sink: str | None, limit: int) -> None:
    """Show dead letters: sink, key, version, attempts, first failure and the last error."""
    store = _store(ctx, sink)
    for name, info in store.status()["sinks"].items():
        if info["disabled"] and sink in (None, name):
            click.echo(
                f"sink {name} is DISABLED since {_when(info['disabled_at'])}: {info['disabled_reason']}"
                f" (re-enable: celsync deadletters retry --sink {name})"
            )
    letters = store.dead_letters(sink, limit=limit + 1)
    if not letters:
        click.echo("no dead letters" + (f" for sink {sink}" if sink else ""))
        return
    for dl in letters[:limit]:
        note = " (may have arrived: reconciled before resending)" if dl.uncertain else ""
        click.echo(
            f"{dl.sink}  {dl.key}  v{dl.version}  attempts={dl.attempts}  "
            f"first_failure={_when(dl.first_failure)}  error: {dl.last_error}{note}"
        )
    if len(letters) > limit:
        click.echo(f"... more dead letters than --limit {limit}")


@deadletters.command("retry")
@click.option("--sink", help="Only this sink's dead letters; also re-enables the sink if disabled.")
@click.option("--key", help="Only the record with this key (call_id/sub_call_id).")
@click.pass_context
def retry_dead(ctx: click.Context, sink: str | None, key: str | None) -> None:
    """Queue dead letters again with a fresh retry horizon.

    Re-enables the sink named by --sink, or every disabled sink when neither --sink nor --key
    is given. The next `celsync run` / `celsync poll` delivers them.
    """
    store = _store(ctx, sink)
    moved = store.retry_dead(sink, key)
    for name, k in moved:
        click.echo(f"{name}: {k} queued again")
    if sink is not None:
        targets = [sink]
    elif key is None:
        targets = [n for n, info in store.status()["sinks"].items() if info["disabled"]]
    else:
        targets = []
    enabled = 0
    for name in targets:
        reason = store.enable_sink(name)
        if reason is not None:
            enabled += 1
            click.echo(f"sink {name} re-enabled (it was disabled: {reason})")
    if key is not None and not moved:
        where = f" for sink {sink}" if sink else ""
        raise click.ClickException(f"no dead letter with key {key!r}{where} (see `celsync deadletters list`)")
    click.echo(f"{len(moved)} dead letter(s) queued again, {enabled} sink(s) re-enabled")
