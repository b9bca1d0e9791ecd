"""Built-in guided-decoding backends: xgrammar, outlines (outlines-core) and
lm-format-enforcer, each implementing :class:`pagoda.interfaces.GuidedBackend`."""
