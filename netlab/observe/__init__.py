"""Observe layer: look into a running lab (status, show, exec, logs) without changing it."""
