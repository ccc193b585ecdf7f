"""A plugin editor module whose own code fails while it is imported (the bad-input catalogue's row)."""

raise RuntimeError("this plugin's module is broken on purpose")
