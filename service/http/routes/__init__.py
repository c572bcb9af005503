"""Route modules; each exposes a `router`."""
