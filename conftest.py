"""Registers the pitfalls plugin for every pytest run from the repository root."""

pytest_plugins = ["harness.plugin"]
