"""Live share streams: every agreement with kafka or mqtt delivery as a projected stream of its consumer."""
