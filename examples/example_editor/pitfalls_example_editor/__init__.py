"""An example editor plugin for the pitfalls harness."""
