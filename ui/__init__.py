"""Terminal rendering with rich. Reads state, never changes it."""
