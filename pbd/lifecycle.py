"""
Telling plugins (L{pbd.interfaces.ILifecycle}) that the daemon started,
reloaded them or is stopping.

A hook is the plugin's code, run on the event loop: one that raises,
fails or does not finish is logged with the plugin's key path and left
behind, so that no plugin can stop a start, a reload or a shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbd.interfaces import ILifecycle

log = Logger()

# How long started() and reloaded() may take before the log says so; the
# daemon never waits for them (stopping() has the shutdown deadline).
HOOK_PATIENCE = 30.0


@dataclass(frozen=True)
class BuiltPlugin:
    """One realm, checker or root the config built, as the config named it."""

    key_path: str
    plugin: str
    options: Mapping[str, Any]
    instance: Any


def tell_started(plugins: Iterable[BuiltPlugin], clock: Any) -> defer.Deferred:
    """Call C{started()} on each plugin that has hooks; fires when all are done."""
    calls = [(plugin, lambda hooks: hooks.started()) for plugin in plugins]
    return _each("started", calls, clock, HOOK_PATIENCE, f"after {HOOK_PATIENCE:g} s")


def tell_reloaded(changed: Iterable[tuple[BuiltPlugin, Any]], clock: Any) -> defer.Deferred:
    """Call C{reloaded(options)} on each plugin kept with new options."""
    calls = [(plugin, _reloaded_with(options)) for plugin, options in changed]
    return _each("reloaded", calls, clock, HOOK_PATIENCE, f"after {HOOK_PATIENCE:g} s")


def tell_stopping(plugins: Iterable[BuiltPlugin], deadline: float, clock: Any) -> defer.Deferred:
    """
    Call C{stopping(deadline)} on each plugin that has hooks; fires when all
    are done, or at the deadline with the unfinished ones logged.
    """
    calls = [(plugin, lambda hooks: hooks.stopping(deadline)) for plugin in plugins]
    patience = max(0.0, deadline - clock.seconds())
    return _each("stopping", calls, clock, patience, "by the deadline (limits.shutdown_timeout)")


def _reloaded_with(options: Any) -> Callable[[Any], Any]:
    return lambda hooks: hooks.reloaded(options)


def _each(
    hook: str,
    calls: list[tuple[BuiltPlugin, Callable[[Any], Any]]],
    clock: Any,
    patience: float,
    late: str,
) -> defer.Deferred:
    return defer.gatherResults(
        [_call(plugin, hook, call, clock, patience, late) for plugin, call in calls]
    )


def _call(
    plugin: BuiltPlugin,
    hook: str,
    call: Callable[[Any], Any],
    clock: Any,
    patience: float,
    late: str,
) -> defer.Deferred:
    """One hook: never fails, and fires within C{patience} seconds (else logs C{late})."""
    if not ILifecycle.providedBy(plugin.instance):
        return defer.succeed(None)
    done: defer.Deferred = defer.Deferred()

    def finished(result: Any) -> None:
        if timer.active():
            timer.cancel()
        if isinstance(result, Failure):
            log.failure(
                "{key_path}: plugin {plugin!r}: its {hook}() hook failed",
                result,
                key_path=plugin.key_path,
                plugin=plugin.plugin,
                hook=hook,
            )
        if not done.called:
            done.callback(None)

    def too_long() -> None:
        log.warn(
            "{key_path}: plugin {plugin!r}: its {hook}() hook has not finished {late}; "
            "going on without it",
            key_path=plugin.key_path,
            plugin=plugin.plugin,
            hook=hook,
            late=late,
        )
        done.callback(None)

    timer = clock.callLater(patience, too_long)
    defer.maybeDeferred(call, plugin.instance).addBoth(finished)
    return done
