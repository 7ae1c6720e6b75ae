"""TUX-like staged, event-driven HTTP server running on pystack."""
