"""Prompt enhancer plug-ins."""
