"""Pure functions that turn a NimService into the Kubernetes objects that serve it (plain dicts)."""
