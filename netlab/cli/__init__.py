"""The command line: thin typer commands over the layers (nothing below imports typer)."""
