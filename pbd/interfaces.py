"""Optional interfaces pbd looks for on the plugins it loads."""

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
