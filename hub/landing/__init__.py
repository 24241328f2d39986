"""Landing: Kafka feed topics into feed tables, each record exactly once."""
