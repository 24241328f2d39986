"""Landing settings beyond `HubSettings.land_*` and `catalog_reload_s`, read from `HUB_LAND_<NAME>`.

They live here, with the code they steer, until they are folded into `hub.settings.HubSettings`
(same names, same environment variables).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LandingOptions(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_LAND_", extra="ignore")

    retry_max_s: float = Field(default=10.0, gt=0, description="Longest wait between retries of a failed write.")
    kafka_timeout_s: float = Field(
        default=30.0, gt=0, description="How long one dead-letter send or topic check may take before it is retried."
    )
    check_broker_epoch: bool = Field(
        default=True,
        description="Before storing offsets, check that the broker still holds this hub's epoch marker topic, "
        "so that a broker that lost its log (the local broker on restart) is noticed and never skipped into.",
    )

    # Bounding the local broker's memory (it keeps every record until its topic is deleted).
    free_broker_memory: bool = Field(
        default=False,
        description="Delete and recreate feed topics that are fully landed, to give the local broker's memory "
        "back. Only on the local stack (HUB_KAFKA_BOOTSTRAP unset). See hub/landing/broker_memory.py.",
    )
    free_broker_memory_every_s: float = Field(default=60.0, gt=0, description="How often to look for such topics.")
    free_broker_memory_min_records: int = Field(
        default=200_000, ge=1, description="A topic is only recreated once it holds at least this many records."
    )
    free_broker_memory_while_ingesting: bool = Field(
        default=False,
        description="Also while ingest workers run. Safe only when every producer of feed topics holds the "
        "topic's shared advisory lock from send to acknowledgement (hub/landing/broker_memory.py); "
        "otherwise topics are only recreated while no ingest worker has an active session.",
    )
