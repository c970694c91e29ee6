"""Annotation formats, loaded into one schema in seconds."""
