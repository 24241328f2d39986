"""The drill's hostile payloads are hostile: each one is refused, with a reason, by its feed's own decoder.

So a drill row that finds one of them landed as a row shows a change in the hub, not a harmless payload.
"""

from __future__ import annotations

import json
import time
from typing import Any

import fastavro
import pytest

from hub.connector.loader import load_connector
from hub.drill.hostile_payloads import families
from hub.drill.stack import CONFIG
from hub.errors import PayloadError
from hub.ingest.decode import FeedDecoder

MAX_PAYLOAD = 65536


def decoders() -> dict[str, FeedDecoder]:
    """Topic prefix (json feed: its whole topic) -> the decoder of the drill feed it reaches."""
    out = {}
    for feed in load_connector(CONFIG / "drill.yaml").feeds:
        schema: Any = fastavro.parse_schema(json.loads((CONFIG / f"{feed.schema_}.avsc").read_text()))
        out[feed.topic.split("/{")[0]] = FeedDecoder(feed.spec(), schema, max_payload_bytes=MAX_PAYLOAD)
    return out


@pytest.mark.parametrize("family", families(MAX_PAYLOAD), ids=lambda f: f.name)
def test_every_hostile_payload_of_the_drill_is_refused_with_a_reason(family: Any) -> None:
    decoder = decoders()[family.topic.split("/hostile")[0]]
    now_ms = int(time.time() * 1000)
    for payload in family.payloads:
        with pytest.raises(PayloadError) as refused:
            decoder.decode(payload, "hostile-1", now_ms)
        assert refused.value.code and str(refused.value).strip()
