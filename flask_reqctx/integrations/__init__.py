"""Optional integrations, each in its own module and imported only when asked for."""
