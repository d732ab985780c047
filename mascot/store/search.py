"""Searching mascots by their words: the query's rules and the condition every word of it puts on a generation."""

from __future__ import annotations

import functools
import operator
import re

import peewee

from mascot.store.schema import UNICODE_LOWER, Tables

MAX_SEARCH_CHARACTERS = 200
NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def search_words(search: str) -> tuple[str, ...]:
    """The words a search looks for, split on whitespace, each once (whatever its case); () for an empty search.

    Refuses a search longer than MAX_SEARCH_CHARACTERS (spaces around it do not count), naming the parameter.
    """
    if not isinstance(search, str):
        raise ValueError(f"search must be text (got {type(search).__name__}).")
    if NOT_TEXT.search(search):  # no database takes a NUL, nor UTF-8 a lone surrogate (SQLite raised on it)
        raise ValueError("search holds characters that are not text (a NUL byte or half of an emoji): remove them.")
    query = search.strip()
    if len(query) > MAX_SEARCH_CHARACTERS:
        raise ValueError(f"search must be at most {MAX_SEARCH_CHARACTERS} characters (got {len(query)}).")
    words: dict[str, str] = {}
    for word in query.split():
        words.setdefault(word.lower(), word)  # "Otter otter" asks for one word: one condition
    return tuple(words.values())


def matching(tables: Tables, words: tuple[str, ...]) -> peewee.Expression:
    """Every word appears, in any case, in the generation's idea as the person typed it (the stored prompt, not
    the one wrapped in presets) or in its style or brand name. Call only with words (`search_words`)."""
    if not words:
        raise ValueError("A search condition needs at least one word.")
    generation = tables.generation
    columns = (generation.prompt, generation.style, generation.brand)
    sqlite = isinstance(generation._meta.database, peewee.SqliteDatabase)
    each_word = [_anywhere(columns, word, sqlite) for word in words]
    return functools.reduce(operator.and_, each_word)


def _anywhere(columns: tuple[peewee.Field, ...], word: str, sqlite: bool) -> peewee.Expression:
    """`word` inside any of `columns`. peewee's `contains` is ILIKE (SQLite: LIKE) with %, _ and \\ escaped, so they
    match themselves; SQLite's LIKE ignores the case of ASCII letters only, so a word with other letters is
    compared lowercased on both sides there (PostgreSQL's ILIKE already handles them)."""
    if sqlite and not word.isascii():
        lowered = word.lower()
        found = [peewee.Function(UNICODE_LOWER, (column,)).contains(lowered) for column in columns]
    else:
        found = [column.contains(word) for column in columns]
    return functools.reduce(operator.or_, found)
