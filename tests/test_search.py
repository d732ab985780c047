"""Searching the gallery and a browser's own mascots by their words, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mascot.store.search import MAX_SEARCH_CHARACTERS, search_words
from mascot.store.store import MascotStore
from tests.support.store import owner, save

NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
ALICE, BOB, CAROL = owner("alice"), owner("bob"), owner("carol")


def at(minutes: int) -> datetime:
    return NOON + timedelta(minutes=minutes)


def found(mascots: MascotStore, search: str, viewer: str | None = None, **paging: object) -> list[str]:
    """The prompts the gallery lists for `search`, in its order."""
    return [entry.request.prompt for entry in mascots.gallery(viewer, search=search, **paging).items]  # type: ignore[arg-type]


def mine(mascots: MascotStore, who: str, search: str, **paging: object) -> list[str]:
    return [entry.request.prompt for entry in mascots.history(who, search=search, **paging)]  # type: ignore[arg-type]


def test_every_word_of_the_search_must_appear_in_any_order_and_case(mascots: MascotStore) -> None:
    save(mascots, ALICE, "a cheerful OTTER barista", now=at(0))
    save(mascots, ALICE, "a robot otter", now=at(1))
    save(mascots, BOB, "a robot fox", now=at(2))

    assert found(mascots, "otter") == ["a robot otter", "a cheerful OTTER barista"]
    assert found(mascots, "Otter ROBOT") == found(mascots, "robot   otter") == ["a robot otter"]
    assert found(mascots, "otter robot fox") == []
    assert found(mascots, "barista otter otter") == ["a cheerful OTTER barista"]
    assert found(mascots, "  ") == found(mascots, "") == ["a robot fox", "a robot otter", "a cheerful OTTER barista"]
    assert mascots.gallery(None, search="robot").total == mascots.count_gallery(search="robot") == 2


def test_letters_beyond_ascii_match_whatever_their_case_on_both_databases(mascots: MascotStore) -> None:
    save(mascots, ALICE, "ein fröhlicher Ötter", now=at(0))
    save(mascots, ALICE, "дракон-талисман", now=at(1))

    assert found(mascots, "ÖTTER FRÖHLICHER") == ["ein fröhlicher Ötter"]
    assert found(mascots, "ДРАКОН") == ["дракон-талисман"]
    assert found(mascots, "otter") == []  # ö is not o


def test_style_and_brand_names_match_but_the_words_the_presets_add_do_not(mascots: MascotStore) -> None:
    save(mascots, ALICE, "an otter", style="Pixel art", now=at(0))
    save(mascots, ALICE, "a fox", style="Sticker", brand="Ocean blue", now=at(1))

    assert found(mascots, "pixel") == ["an otter"]
    assert found(mascots, "otter ART") == ["an otter"]
    assert found(mascots, "fox ocean sticker") == ["a fox"]
    assert found(mascots, "outline") == []  # in the Sticker preset's prompt, not in what the person typed


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("100%", ["100% otter"]),
        ("%", ["100% otter"]),
        ("_", ["snake_case fox"]),
        ("e_c", ["snake_case fox"]),
        ("\\", ["back\\slash owl"]),
        ("k\\s", ["back\\slash owl"]),
        ("1_0%", []),
    ],
)
def test_like_wildcards_in_a_search_match_only_themselves(
    mascots: MascotStore, search: str, expected: list[str]
) -> None:
    save(mascots, ALICE, "100% otter", now=at(0))
    save(mascots, ALICE, "snake_case fox", now=at(1))
    save(mascots, ALICE, "back\\slash owl", now=at(2))
    save(mascots, ALICE, "1000 otters", now=at(3))  # what "100%" would find as a pattern
    save(mascots, ALICE, "snakescase fox", now=at(4))  # what "_" would find as a pattern

    assert found(mascots, search) == expected
    assert mascots.count_gallery(search=search) == len(expected)


def test_a_gallery_search_never_finds_private_or_hidden_mascots(mascots: MascotStore) -> None:
    save(mascots, ALICE, "a public otter", now=at(0))
    [private] = save(mascots, ALICE, "a private otter", now=at(1), is_public=False).public_ids
    [reported] = save(mascots, BOB, "a reported otter", now=at(2)).public_ids
    [taken_down] = save(mascots, BOB, "a taken down otter", now=at(3)).public_ids
    mascots.report_mascot(CAROL, reported, address_hash=owner("network"), reports_to_hide=1)
    assert mascots.hide_mascot(taken_down)

    for viewer in (None, CAROL, ALICE, BOB):  # not even their owners: the gallery is what everyone sees
        assert found(mascots, "otter", viewer) == ["a public otter"]
    assert mascots.count_gallery(search="otter") == 1
    assert found(mascots, "private") == found(mascots, "reported") == found(mascots, "taken") == []
    assert mine(mascots, ALICE, "otter") == ["a private otter", "a public otter"]
    assert mascots.mascot(private, ALICE) is not None  # still there for its owner


def test_my_mascots_search_covers_only_the_browsers_own(mascots: MascotStore) -> None:
    save(mascots, ALICE, "alice's otter", now=at(0))
    save(mascots, ALICE, "alice's fox", now=at(1), is_public=False)
    save(mascots, BOB, "bob's otter", now=at(2))

    assert mine(mascots, ALICE, "otter") == ["alice's otter"]
    assert mine(mascots, ALICE, "fox") == ["alice's fox"]
    assert mine(mascots, BOB, "alice's") == []
    assert mine(mascots, owner("never made any"), "otter") == []
    assert mascots.count_history(ALICE, search="otter") == 1
    assert mascots.count_history(owner("never made any"), search="otter") == 0
    page = mascots.history_page(BOB, search="otter")
    assert ([entry.request.prompt for entry in page.items], page.total, page.has_next) == (["bob's otter"], 1, False)


def test_pages_of_search_results_cover_every_match_once_in_the_chosen_order(mascots: MascotStore) -> None:
    for minute in range(5):
        save(mascots, ALICE, f"otter {minute}", now=at(minute))
        save(mascots, ALICE, f"fox {minute}", now=at(minute), count=2)
    [liked] = save(mascots, BOB, "otter liked", now=at(-10)).public_ids
    mascots.toggle_like(CAROL, liked)

    pages = [mascots.gallery(None, page=number, per_page=2, search="OTTER") for number in (1, 2, 3, 4)]

    assert [[entry.request.prompt for entry in page.items] for page in pages] == [
        ["otter 4", "otter 3"],
        ["otter 2", "otter 1"],
        ["otter 0", "otter liked"],
        [],
    ]
    assert [(page.total, page.has_next) for page in pages] == [(6, True), (6, True), (6, False), (6, False)]
    assert found(mascots, "otter", sort="top", per_page=2) == ["otter liked", "otter 4"]
    history = [mascots.history_page(ALICE, page=number, per_page=4, search="fox") for number in (1, 2, 3)]
    assert [len(page.items) for page in history] == [4, 4, 2]
    assert {entry.request.prompt for page in history for entry in page.items} == {
        f"fox {minute}" for minute in range(5)
    }
    assert {page.total for page in history} == {10}


def test_a_search_too_long_is_refused_naming_the_parameter(mascots: MascotStore) -> None:
    longest = "o" * MAX_SEARCH_CHARACTERS
    save(mascots, ALICE, longest)

    assert found(mascots, f"  {longest}  ") == [longest]  # the spaces around it do not count
    with pytest.raises(ValueError, match=f"search must be at most {MAX_SEARCH_CHARACTERS} characters"):
        mascots.gallery(None, search=longest + "o")
    with pytest.raises(ValueError, match="search must be at most"):
        mascots.history(ALICE, search=longest + "o")
    with pytest.raises(ValueError, match="search must be at most"):
        mascots.count_gallery(search=longest + "o")


def test_search_words_are_split_on_whitespace_and_each_kept_once() -> None:
    assert search_words(" Otter\trobot\n otter  ROBOT sticker ") == ("Otter", "robot", "sticker")
    assert search_words("") == search_words(" \t\n ") == ()
    with pytest.raises(ValueError, match="search must be text"):
        search_words(None)  # type: ignore[arg-type]
