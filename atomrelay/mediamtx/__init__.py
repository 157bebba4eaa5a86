"""mediamtx integration: Control API client, path builders, reconciler, settings and auth hook."""
