"""Generator plug-ins: prompt and references in, picture bytes out."""
