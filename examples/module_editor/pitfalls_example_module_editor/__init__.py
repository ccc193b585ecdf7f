"""An example module editor, written from docs/writing-an-editor.md alone."""
