"""Control plane: connector configs, catalog, schema registry, plan and apply."""
