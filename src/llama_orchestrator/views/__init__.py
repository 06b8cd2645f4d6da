"""Presentation shared by the CLI, the dashboard and the control API: the rows every
reader lists (rows), how they look (styles, table), and ``describe`` (describe,
describe_text). Cheap imports at module level: ``ps``'s fast path uses rows, styles and
table.
"""
