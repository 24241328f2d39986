"""Which feed a partner's MQTT topic belongs to, and the per-feed codecs: pure, built from the catalog."""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

from hub.dead_letters import FEED, PARTNER
from hub.ingest.decode import FeedDecoder
from hub.schema.wire import WireEncoder


@dataclass(frozen=True)
class FeedRoute:
    partner_id: str
    feed: str
    kafka_topic: str
    schema_id: int
    levels: tuple[str, ...]  # the subscription filter, split; '+' marks the device id level
    decoder: FeedDecoder
    encoder: WireEncoder

    @functools.cached_property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        """The Kafka headers every record of this feed starts with."""
        return ((PARTNER, self.partner_id.encode()), (FEED, self.feed.encode()))

    @functools.cached_property
    def accepted_key(self) -> tuple[str, str, str]:
        return (self.partner_id, self.feed, "accepted")

    @property
    def device_level(self) -> int | None:
        return self.levels.index("+") if "+" in self.levels else None


class Router:
    """Maps a topic to (route, device id from topic); remembers recent topics (devices repeat theirs)."""

    def __init__(self, routes: list[FeedRoute], cache_size: int = 100_000) -> None:
        self.routes = routes
        self.partners = frozenset(r.partner_id for r in routes)  # every partner has at least one feed
        self._by_shape: dict[tuple[str, int], list[FeedRoute]] = {}
        for r in routes:
            self._by_shape.setdefault((r.levels[1], len(r.levels)), []).append(r)
        self._cache: OrderedDict[str, tuple[FeedRoute, str | None] | None] = OrderedDict()
        self._cache_size = cache_size

    def route(self, topic: str) -> tuple[FeedRoute, str | None] | None:
        hit = self._cache.get(topic, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        found = self._match(topic)
        self._cache[topic] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found

    def _match(self, topic: str) -> tuple[FeedRoute, str | None] | None:
        levels = topic.split("/")
        if len(levels) < 2:
            return None
        for r in self._by_shape.get((levels[1], len(levels)), ()):
            if all(f == "+" or f == t for f, t in zip(r.levels, levels, strict=True)):
                dl = r.device_level
                return r, (levels[dl] if dl is not None else None)
        return None

    def partner_of(self, topic: str, namespace_root: str) -> str | None:
        levels = topic.split("/")
        if len(levels) >= 2 and levels[0] == namespace_root:
            return levels[1]
        return None
