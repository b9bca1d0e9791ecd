"""Built-in tool-call parsers, one module per model family (registered in ``plugin``)."""
