"""Long reliability runs behind ``scripts/soak.py``: lifecycle soak, faults, load, fuzz."""
