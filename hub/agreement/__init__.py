"""Organisations and data-sharing agreements as the hub speaks them: the files (model, loader), the grants
inside (plain data), the names of what they become in SQL, the policy decision, and ODRL."""
