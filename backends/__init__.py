"""Compilation backends; importing this package registers them."""
