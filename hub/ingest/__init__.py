"""Ingest: MQTT messages in, validated Avro records (Confluent wire format) out to Kafka."""
