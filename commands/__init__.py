"""The wiring behind each CLI subcommand (main.py parses, these connect the packages)."""
