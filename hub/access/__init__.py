"""Access plane: what reads landed data on an organisation's behalf (today the queries city data teams ask most)."""
