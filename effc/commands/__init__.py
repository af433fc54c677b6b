"""One module per CLI command; `effc.cli` collects them."""
