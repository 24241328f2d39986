"""What the catalog and the page need to know besides the catalog database: settings, addresses, the broker.

`hub serve` builds it from the hub's settings; without one the API serves the catalog and the page with
addresses taken from the database URL alone, and refuses approvals (they apply agreements, which needs every
server of the hub).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from hub.access.reading import Addresses, public_addresses
from hub.api.dcat import CatalogInfo
from hub.mqtt_auth.dynsec import BrokerAuth
from hub.settings import HubSettings


@dataclass(frozen=True)
class Site:
    addresses: Addresses
    title: str = "Civic data-sharing hub"
    description: str = "Live sensor feeds the city and its partners share: who publishes them, and on what terms."
    publisher: str = "Hub operator"
    publisher_type: str = "LocalAuthority"
    licence: str = "CC0-1.0"
    contact: str | None = None
    public_url: str | None = None
    page_size: int = 100
    agreements_dir: Path = Path("agreements")
    settings: HubSettings | None = None  # approvals apply agreements with these; None: approvals are refused
    broker: BrokerAuth | None = None

    @classmethod
    def from_settings(cls, settings: HubSettings, broker: BrokerAuth | None) -> Site:
        ep = settings.endpoints()
        return cls(
            addresses=public_addresses(ep.database_url, ep.mqtt_url, ep.kafka_bootstrap, ep.registry_url),
            title=settings.catalog_title,
            description=settings.catalog_description,
            publisher=settings.catalog_publisher,
            publisher_type=settings.catalog_publisher_type,
            licence=settings.catalog_licence,
            contact=settings.catalog_contact,
            public_url=settings.public_url,
            page_size=settings.catalog_page_size,
            agreements_dir=settings.agreements_dir.resolve(),
            settings=settings,
            broker=broker,
        )

    @classmethod
    def bare(cls, database_url: str) -> Site:
        return cls(
            addresses=public_addresses(database_url, "mqtt://127.0.0.1:1883", "127.0.0.1:9092", "http://127.0.0.1")
        )

    def base(self, request: Request) -> str:
        """The hub's address, ending in '/': the public URL where set, else the one this request came to."""
        url = self.public_url or str(request.base_url)
        return url if url.endswith("/") else url + "/"

    def catalog_info(self, request: Request) -> CatalogInfo:
        return CatalogInfo(
            base=self.base(request),
            title=self.title,
            description=self.description,
            publisher=self.publisher,
            publisher_type=self.publisher_type,
            licence=self.licence,
            contact=self.contact,
        )


def site(request: Request) -> Site:
    found: Site = request.app.state.site
    return found
