"""Tag published dates: read from every source users see them in, and judged real or not."""
