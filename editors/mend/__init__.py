"""MEND: a trained network maps the edit loss's gradient factors to a weight update (see editor.py)."""
