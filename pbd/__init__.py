"""pbd: a daemon serving Twisted Perspective Broker portals configured from YAML."""

__version__ = "0.1.0"
