"""The registry config: its schema, loading and validation, bounded file reading, reloading."""
