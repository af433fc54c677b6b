"""Placeholder: this pass family is being written."""
