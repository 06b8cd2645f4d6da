"""The control API: the daemon's HTTP routes for the CLI, the web page and tools."""
