"""The local stack: real Mosquitto, PostgreSQL and a Kafka-protocol broker as processes on loopback."""
