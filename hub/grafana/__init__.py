"""Grafana, as the hub generates it: one Grafana organisation per hub organisation, whose datasource reads as
that organisation's database role, with a dashboard for each feed it publishes and each grant it holds, and an
overview for operators. Pure generation (`model`, `sql`, `panels`, `dashboards`, `site`, `files`, `macros`,
`sync_plan`) apart from I/O (`database`, `check`, `sync`). Reference: docs/dashboards.md.
"""
