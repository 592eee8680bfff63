"""Bundled root plugins: objects a listener serves with no login (group C{pbd.roots})."""
