"""The typed row classes of mascot.store.schema name exactly the fields of each store's peewee models."""

from __future__ import annotations

import dataclasses
import inspect

import peewee
import pytest

from mascot.store import schema


def declared_names(row: type) -> set[str]:
    """The attribute names a row class and its row bases declare for the type checker."""
    names: set[str] = set()
    for klass in inspect.getmro(row):
        if klass.__module__ == schema.__name__ and klass.__name__.endswith("Row"):
            names.update(inspect.get_annotations(klass))
    return names


def row_class(model: type[peewee.Model]) -> type:
    """The module-level row class a store's model derives from."""
    (row,) = [base for base in model.__bases__ if base.__module__ == schema.__name__ and base.__name__.endswith("Row")]
    return row


TABLES = schema.define_tables(peewee.SqliteDatabase(":memory:"))


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(schema.Tables)])
def test_each_row_class_declares_exactly_its_models_fields(name: str) -> None:
    model = getattr(TABLES, name)
    fields = set(model._meta.fields)
    foreign_key_ids = {
        field.object_id_name for field in model._meta.fields.values() if isinstance(field, peewee.ForeignKeyField)
    }
    declared = declared_names(row_class(model))
    assert declared - foreign_key_ids == fields


def test_two_stores_never_share_model_classes() -> None:
    other = schema.define_tables(peewee.SqliteDatabase(":memory:"))
    assert other.browser is not TABLES.browser
    assert other.generation.browser.rel_model is other.browser
    assert TABLES.generation.browser.rel_model is TABLES.browser
