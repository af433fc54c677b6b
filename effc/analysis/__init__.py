"""Analyses the pass families share: channel dependency groups, least squares, layer inputs, calibration statistics."""
