"""Presenting results: the terminal table in the paper's layout (and later the HTML report)."""
