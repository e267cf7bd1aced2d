"""The `ifcbflow` command (Typer): one module per command group, option parsing, logging and progress display.

The top layer: it may import every other one, and is the only one that talks to the terminal (typer, rich).
"""
