"""An example realm plugin for pbd, packaged on its own."""
