"""Realm plugins bundled with pbd; each is a small example of the realm contract."""
