"""`hub bench`: throughput, latency, loss and memory of the whole path, beside references measured in the same run."""
