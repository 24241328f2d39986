"""`hub drill`: faults, abuse and hostile input against a private stack, each reconciled exactly."""
