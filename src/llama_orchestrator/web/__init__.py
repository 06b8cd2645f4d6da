"""The web page the daemon serves at ``/ui/``, and its login (issue 12)."""
