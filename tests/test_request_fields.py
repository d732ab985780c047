"""The recipe for a new generation parameter (docs/architecture.md) holds: every field of GenerationRequest has its
database column, its place in the PNG's JSON, a label on the page, and comes back whole in a stored mascot."""

from __future__ import annotations

import dataclasses

import pytest

from mascot.prompt.request import PARAMETER_LABELS, GenerationRequest
from mascot.store import imaging
from mascot.store.store import MascotStore
from tests.support.store import MODEL, make_request, make_result, owner

REQUEST_FIELDS = [field.name for field in dataclasses.fields(GenerationRequest)]


@pytest.mark.parametrize("name", REQUEST_FIELDS)
def test_every_request_field_has_a_database_column(mascots: MascotStore, name: str) -> None:
    columns = mascots.tables.generation._meta.fields
    assert name in columns, f"GenerationRequest.{name} has no column: add it to store/schema.py and a migration"


def test_every_request_field_is_in_the_pngs_json_and_in_a_stored_mascot(mascots: MascotStore) -> None:
    # Away from every default, so a column read back from the wrong place shows.
    request = dataclasses.replace(
        make_request(count=1, style="Sticker", brand="Ocean"),
        logo="ab" * 32,
        logo_weight=0.6,
        adapter_name="look",
        lora_scale=0.5,
    )
    saved = mascots.save_generation(owner("alice"), request, make_result(request), MODEL)

    embedded = imaging.read_parameters(saved.image_paths[0])
    (entry,) = mascots.history(owner("alice"))

    missing_in_png = [name for name in REQUEST_FIELDS if name not in embedded]
    assert missing_in_png == [], "store.store.embedded_parameters must write these into the PNG"
    assert entry.request == request, "the generation table's columns must give the request back whole"
    assert entry.remix_request() == request  # one image: its own seed is the request's


@pytest.mark.parametrize("name", REQUEST_FIELDS)
def test_every_request_field_has_a_label_for_people(name: str) -> None:
    assert PARAMETER_LABELS.get(name), f"prompt/request.py PARAMETER_LABELS needs the page's word for {name}"
