"""Security primitives: password hashing, tokens and throttling, as small pure pieces."""
