"""registry-canary: pulls long-lived images from container registries and verifies every byte."""

__version__ = "0.1.0"
