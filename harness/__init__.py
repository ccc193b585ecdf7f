"""The pitfalls harness: load a model, edit it, score it, record the pitfall metrics."""
