"""Request handlers, one module per resource; ``base`` holds the shared plumbing."""
