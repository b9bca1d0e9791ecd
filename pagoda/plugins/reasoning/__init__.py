"""Built-in reasoning parsers (registered in ``plugin``)."""
