"""The catalog every plane reads: its tables and queries (store.py), the applied feeds as the workers see them
(runtime.py), Kafka topic specs (topics.py), advisory lock keys (locks.py) and the feed summaries people read."""
