"""Router: which feed an MQTT topic belongs to, and the device id its topic carries. Pure, no servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.connector.loader import load_connector
from hub.ingest.decode import FeedDecoder
from hub.ingest.mqtt_source import Message
from hub.ingest.outgoing import Preparer, Stats
from hub.ingest.routes import FeedRoute, Router
from hub.schema.avro import load_feed_schema
from hub.schema.wire import WireEncoder
from hub.settings import HubSettings

REPO = Path(__file__).resolve().parents[2]
ROOT = "partners"


def example_routes() -> list[FeedRoute]:
    """The routes of the example connectors, built as the ingest worker builds them from the catalog."""
    routes: list[FeedRoute] = []
    for path in sorted((REPO / "connectors").glob("*.yaml")):
        config = load_connector(path)
        partner = config.partner.id
        for feed in config.feeds:
            schema = load_feed_schema(REPO / "schemas" / f"{feed.schema_}.avsc")
            schema_id = len(routes) + 1
            routes.append(
                FeedRoute(
                    partner_id=partner,
                    feed=feed.name,
                    kafka_topic=f"hub.{partner}.{feed.name}",
                    schema_id=schema_id,
                    levels=tuple(feed.subscription(f"{ROOT}/{partner}").split("/")),
                    decoder=FeedDecoder(feed.spec(), schema.parsed),
                    encoder=WireEncoder(schema_id, schema.parsed),
                )
            )
    return routes


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(example_routes())


def feed_of(router: Router, topic: str) -> tuple[str, str, str | None] | None:
    found = router.route(topic)
    if found is None:
        return None
    route, device = found
    return route.partner_id, route.feed, device


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("partners/uni_air_lab/stations/st-7/air", ("uni_air_lab", "air_quality", "st-7")),
        ("partners/uni_air_lab/stations/st-7/noise", ("uni_air_lab", "noise_levels", "st-7")),
        ("partners/city_transport/traffic/junction-0042-n", ("city_transport", "traffic_counts", "junction-0042-n")),
        ("partners/city_transport/parking/car-park-3", ("city_transport", "parking_occupancy", "car-park-3")),
    ],
)
def test_a_feed_topic_routes_to_its_feed_with_the_device_id_from_its_placeholder_level(
    router: Router, topic: str, expected: tuple[str, str, str]
) -> None:
    assert feed_of(router, topic) == expected


def test_a_feed_whose_topic_has_no_device_level_routes_without_a_device_id(router: Router) -> None:
    """voltcharge publishes every charger on one topic; the id is in the payload."""
    assert feed_of(router, "partners/voltcharge/chargers/status") == ("voltcharge", "charger_status", None)


@pytest.mark.parametrize(
    "topic",
    [
        "partners/uni_air_lab/stations/st-7/pollen",  # a level no feed has
        "partners/uni_air_lab/stations/st-7",  # too few levels
        "partners/uni_air_lab/stations/st-7/air/extra",  # too many levels
        "partners/city_transport/stations/st-7/air",  # another partner's feed shape
        "partners/nobody/stations/st-7/air",  # a partner with no feeds
        "elsewhere/uni_air_lab/stations/st-7/air",  # outside the namespace root
        "partners/voltcharge/chargers/status/x",
        "partners",
        "",
    ],
)
def test_a_topic_no_feed_matches_routes_nowhere(router: Router, topic: str) -> None:
    assert router.route(topic) is None


def test_the_device_level_takes_any_text_and_leaves_checking_it_to_the_decoder(router: Router) -> None:
    assert feed_of(router, "partners/uni_air_lab/stations//air") == ("uni_air_lab", "air_quality", "")
    assert feed_of(router, "partners/uni_air_lab/stations/a b/air") == ("uni_air_lab", "air_quality", "a b")


def test_the_partner_of_a_topic_is_its_namespace_level() -> None:
    router = Router([])
    assert router.partner_of("partners/uni_air_lab/anything/at/all", ROOT) == "uni_air_lab"
    assert router.partner_of("partners/voltcharge", ROOT) == "voltcharge"
    assert router.partner_of("elsewhere/uni_air_lab/x", ROOT) is None
    assert router.partner_of("partners", ROOT) is None


def test_routing_stays_correct_and_bounded_when_more_topics_than_the_cache_holds_arrive() -> None:
    router = Router(example_routes(), cache_size=3)
    topics = [f"partners/uni_air_lab/stations/d{i}/air" for i in range(10)] + ["partners/uni_air_lab/nope"]
    for _ in range(2):
        for i, topic in enumerate(topics[:-1]):
            assert feed_of(router, topic) == ("uni_air_lab", "air_quality", f"d{i}")
        assert router.route(topics[-1]) is None
    assert len(router._cache) <= 3


def test_a_repeated_topic_gets_the_same_route_from_the_cache(router: Router) -> None:
    first = router.route("partners/city_transport/traffic/j-1")
    again = router.route("partners/city_transport/traffic/j-1")
    assert first is not None and again is first
    assert router.route("partners/city_transport/traffic/j-1/x") is None
    assert router.route("partners/city_transport/traffic/j-1/x") is None


def test_a_csv_header_line_is_skipped_and_counted_not_dead_lettered(router: Router) -> None:
    settings = HubSettings()
    stats, reports = Stats(), list[str]()
    partitions = {r.kafka_topic: 1 for r in router.routes} | {settings.kafka_dead_letter_topic: 1}
    preparer = Preparer(settings, router, partitions, stats, lambda topic, body: reports.append(topic))
    topic = f"{ROOT}/city_transport/parking/p1"
    out = preparer.prepare_all(
        [
            Message(topic, b"time,occupied,capacity,status\n", 1, 1_795_424_100_000, 0),
            Message(topic, b"oops", 2, 1_795_424_100_000, 0),
        ]
    )
    assert [o.topic for o in out] == [settings.kafka_dead_letter_topic]  # only the bad line
    assert stats.counters[("city_transport", "parking_occupancy", "header_line")] == 1
    assert stats.rejected == 1
    assert len(reports) == 1
