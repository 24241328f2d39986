"""Avro as the hub speaks it: a feed's schema rules and columns (avro.py), compatibility between versions
(compatibility.py), the Confluent wire format (wire.py) and the schema registry's store (registry.py)."""
