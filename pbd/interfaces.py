"""Optional interfaces pbd looks for on the plugins it loads."""

from typing import Any

from zope.interface import Interface


class IConfigWarnings(Interface):
    """
    A plugin that can tell the operator about something legal but unwise.

    C{pbd check-config} prints these warnings; the daemon logs them at start.
    """

    def configWarnings() -> list[str]:
        """
        @return: one human sentence per warning.
        """


class ICheckerSource(Interface):
    """
    A realm that brings its own credential checkers (the legacy realm's identities).

    pbd consults them before the checkers the config lists for the portal.
    """

    def credentialsCheckers() -> list:
        """
        @return: objects providing L{twisted.cred.checkers.ICredentialsChecker}.
        """


class ILegacyAuthorizer(Interface):
    """
    What the old (Twisted 1.x) login conversation needs from a realm.

    A portal whose realm provides this also answers C{username} / C{respond}
    / C{attach} on its PB root (see L{pbd.oldlogin}).
    """

    def getIdentity(name):
        """
        @return: the identity named C{name}, or L{None}.
        """

    def getServiceNamed(name):
        """
        @return: the service named C{name}.
        @raise twisted.spread.pb.Error: naming the unknown service.
        """


class IReloadable(Interface):
    """
    A plugin whose data lives in a file the operator edits while pbd runs.

    pbd calls L{reloadIfChanged} every few seconds and L{reload} on SIGHUP,
    on the event loop: either may return a Deferred, and must not block
    (read files in a thread). A reload that fails must keep the previous
    data in force and log why.
    """

    def reloadIfChanged() -> Any:
        """Reload if the underlying file changed since the last load."""

    def reload() -> Any:
        """Reload now."""


class IUsesHashPool(Interface):
    """
    A checker whose checks are slow enough to need the daemon's hash pool
    (L{pbd.hashpool.HashPool}); pbd hands it over when it builds the portal.
    """

    def useHashPool(pool) -> None:
        """Run slow checks in C{pool} from now on."""


class IUsesDirectory(Interface):
    """
    A root plugin that shows what the daemon serves (the bundled C{directory}
    root); pbd hands it the daemon's L{pbd.directory.Directory} once every
    portal and listener is built, before anything is served.
    """

    def useDirectory(directory) -> None:
        """
        Keep C{directory} to answer from.

        @raise pbd.errors.OptionError: when an option names something the
            directory does not hold (reported at the option's key path).
        """


class ILifecycle(Interface):
    """
    A realm, checker or root plugin that wants to know when the daemon
    starts, reloads and stops. Every method is optional to implement as a
    no-op, but all three must exist; plugins without this interface are
    simply not told.

    Each hook runs on the event loop and may return a Deferred. A hook
    that raises (or whose Deferred fails) is logged once with the plugin's
    key path; it never stops the daemon, a reload or a shutdown.
    """

    def started() -> Any:
        """
        The reactor is running and every listener is bound (also called on
        a plugin first built by a reload, once the reload is in force).
        """

    def reloaded(options: Any) -> Any:
        """
        A reload changed this plugin's options; the plugin keeps serving
        with the new ones (without this interface it would be replaced by a
        new instance built from them). C{options} is what the constructor
        would be given, already validated. Called once the new config is in
        force; a hook that fails leaves the plugin to carry on as it can.
        """

    def stopping(deadline: float) -> Any:
        """
        The daemon is stopping: listeners are closed, calls in flight are
        finishing. Flush and close by C{deadline} (in the reactor's
        C{seconds()}); a Deferred still unfired then is abandoned and the
        connections are closed.
        """


class IUsesPubSub(Interface):
    """
    A realm, checker or root plugin that talks to its peers in other pbd
    processes (the bundled C{chat} realm); pbd hands it an
    L{pbd.pubsub.IPubSub} when it builds it, before anything is served:
    Redis when the config has C{pubsub: redis:}, else in-process.
    """

    def usePubSub(pubsub) -> None:
        """
        Publish and subscribe through C{pubsub} from now on. Its channels
        are the plugin's own (pbd prefixes them with the plugin's key path).
        """
