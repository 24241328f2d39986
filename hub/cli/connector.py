"""`hub connector init`: a connector config and its Avro schema drafted from sample payloads, for review."""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from hub.cli.common import console, one_line_errors, settings
from hub.connector.draft import Draft, draft
from hub.connector.draft_avro import draft_avro
from hub.connector.draft_files import Names, config_text, report_lines, schema_text
from hub.connector.samples import SampleError, Samples, read_samples
from hub.control.desired import load_desired
from hub.errors import ConfigError, HubError, PayloadError
from hub.identifiers import check_identifier
from hub.ingest.decode import FeedDecoder

app = typer.Typer(help="Connector configs: draft one from sample payloads.", no_args_is_help=True)


@app.command()
@one_line_errors
def init(
    sample: Annotated[list[Path], typer.Option("--sample", "-s", help="A file of sample payloads (repeatable).")],
    partner: Annotated[str, typer.Option("--partner", help="The partner id (connectors/<partner>.yaml).")],
    feed: Annotated[str, typer.Option("--feed", help="The feed's name (its table's name).")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="json, csv or avro (default: from the file name, else json).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where connectors/ and schemas/ are written.")] = Path("."),
    schema: Annotated[str | None, typer.Option("--schema", help="The schema's name (default: the feed's).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The partner's display name.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="city, university or private.")] = "private",
    contact: Annotated[str | None, typer.Option("--contact", help="Who to tell when data stops or is refused.")] = None,
    licence: Annotated[str, typer.Option("--licence", help="The feed's licence (SPDX id or name).")] = "proprietary",
    topic: Annotated[str | None, typer.Option("--topic", help="The MQTT topic inside the partner's namespace.")] = None,
    device_id_field: Annotated[
        str | None, typer.Option("--device-id-field", help="The device id's path, when the draft cannot tell.")
    ] = None,
    time_field: Annotated[
        str | None, typer.Option("--time-field", help="The event time's path, when the draft cannot tell.")
    ] = None,
) -> None:
    """Draft connectors/<partner>.yaml and schemas/<feed>.avsc from samples; print the evidence for every guess."""
    check_identifier(partner, "partner id")
    check_identifier(feed, "feed name")
    schema_name = check_identifier(schema or feed, "schema name")
    samples = read_samples(sample, fmt)
    drafter = draft_avro if samples.format == "avro" else draft
    d = drafter(samples, device_field=device_id_field, time_field=time_field)
    names = Names(partner, feed, schema_name, name or partner.replace("_", " ").title(), kind,
                  contact or f"data@{partner.replace('_', '-')}.example", licence, topic)  # fmt: skip
    config_file = out / "connectors" / f"{partner}.yaml"
    schema_file = out / "schemas" / f"{schema_name}.avsc"
    taken = [str(p) for p in (config_file, schema_file) if p.exists()]
    if taken:
        raise ConfigError(f"{' and '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; nothing was written "
                          "(it never overwrites: choose --out DIR, --schema NAME or another --partner)")  # fmt: skip
    texts = {config_file: config_text(d, names, samples), schema_file: schema_text(d, names)}
    check_draft(texts, config_file, schema_file, d, samples)
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as f:  # "x": never over a file made meanwhile
            f.write(text)
    for line in report_lines(d, samples, [str(config_file), str(schema_file)]):
        console.print(line, highlight=False, markup=False)
    console.print(f"\nnext: hub plan {config_file}    then: hub apply {config_file}", highlight=False, markup=False)


def check_draft(texts: dict[Path, str], config_file: Path, schema_file: Path, d: Draft, samples: Samples) -> None:
    """The draft must pass `hub plan`'s checks as written and decode every sample it was made from."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "connectors").mkdir()
        (root / "schemas").mkdir()
        (root / "connectors" / config_file.name).write_text(texts[config_file], encoding="utf-8")
        (root / "schemas" / schema_file.name).write_text(texts[schema_file], encoding="utf-8")
        try:
            [partner] = load_desired(root / "connectors" / config_file.name, settings(), root / "schemas")
        except HubError as exc:
            raise SampleError(
                f"the draft does not pass hub plan ({exc}); please report this with the samples"
            ) from None
        desired = partner.feeds[0]
    # Old samples are fine to draft from: the time range is the config's to set (the report says so).
    spec = desired.feed.spec()
    wide = dataclasses.replace(spec.time, max_age=timedelta(days=36500), max_future=timedelta(days=36500))
    decoder = FeedDecoder(dataclasses.replace(spec, time=wide), desired.schema.parsed)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for i, message in enumerate(samples.messages, start=1):
        try:
            decoder.decode(message, "sample-device", now_ms)
        except PayloadError as exc:
            raise SampleError(f"sample {i} would be refused by the draft ({exc.code}: {exc}); fix the sample, or "
                              "choose with --device-id-field / --time-field") from None  # fmt: skip
