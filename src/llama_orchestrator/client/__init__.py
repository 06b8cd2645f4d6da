"""Clients of the daemon's control API: the CLI, the dashboard and the benchmarks use them.

Standard library only (and psutil where a process must be signalled), since every
command pays for what it imports.
"""
