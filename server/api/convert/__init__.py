"""Conversions between messages and domain values shared by the servicers."""
