"""The small world of the policy tests and the dashboard tests: a partner `lab`, two organisations, and agreements
that grant raw fields of some devices with a delay and a validity window, aggregates only, and pseudonymised
open data."""

from __future__ import annotations

from hub.agreement.grants import Org

ORGS = {
    "lab": Org("lab", "Air Lab", "university", partner=True),
    "city": Org("city", "City", "city", partner=False),
    "research": Org("research", "Research", "university", partner=False),
}

AGREEMENTS = """\
agreements:
  - id: air_city
    provider: lab
    consumers: [city]
    purpose: Clean air
    licence: ODbL-1.0
    valid_from: 2026-11-01
    valid_until: 2026-12-01
    grants:
      - feed: air
        fields: [pm25, no2]
        devices: [st-1, "st-2*"]
        delay: 15m
  - id: air_research
    provider: lab
    consumers: [research]
    purpose: Exposure study
    licence: ODbL-1.0
    grants:
      - feed: air
        form: aggregate
        bucket: 1h
        min_devices: 3
        fields: [pm25]
  - id: noise_open
    provider: lab
    consumers: everyone
    purpose: Open data
    licence: CC0-1.0
    grants:
      - feed: noise
        pseudonymise: true
"""
