"""Control plane: the desired state from connector configs, the plan (a diff against the catalog) and apply."""
