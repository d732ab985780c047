"""The picture routes' light query (store.visible_picture) lets through exactly what the full mascot query lets a
browser see: public and not taken down, or its own (through a device link too); never a private, taken-down for
others, deleted or missing-file mascot to anyone else. On SQLite and PostgreSQL."""

from __future__ import annotations

from mascot.store.store import MascotStore
from tests.support.store import owner, save


def sees(mascots: MascotStore, public_id: str, token_hash: str | None) -> bool:
    """What the light query answers, checked against the full query the page uses (the owner resolved)."""
    picture = mascots.visible_picture(public_id, token_hash)
    viewer = None if token_hash is None else mascots.resolve_owner(token_hash)
    entry = mascots.mascot(public_id, viewer)
    assert (picture is None) == (entry is None)
    if picture is not None and entry is not None:
        assert (picture.path, picture.thumbnail_path, picture.prompt) == (
            entry.path,
            entry.thumbnail_path,
            entry.prompt,
        )
    return picture is not None


def test_a_public_mascot_is_seen_by_anyone_and_a_private_one_only_by_its_owner(mascots: MascotStore) -> None:
    [shown] = save(mascots, owner("alice"), "shown").public_ids
    [kept] = save(mascots, owner("alice"), "kept", is_public=False).public_ids

    assert [sees(mascots, shown, who) for who in (None, owner("bob"), owner("alice"))] == [True, True, True]
    assert [sees(mascots, kept, who) for who in (None, owner("bob"), owner("alice"))] == [False, False, True]


def test_taken_down_deleted_and_missing_mascots_are_not_seen(mascots: MascotStore) -> None:
    [hidden] = save(mascots, owner("alice"), "hidden").public_ids
    [gone] = save(mascots, owner("alice"), "gone").public_ids
    missing = save(mascots, owner("alice"), "missing")
    assert mascots.hide_mascot(hidden)
    assert mascots.delete_mascot(owner("alice"), gone)
    missing.image_paths[0].unlink()
    mascots.check_files()

    assert [sees(mascots, hidden, who) for who in (None, owner("bob"), owner("alice"))] == [False, False, True]
    assert not sees(mascots, gone, owner("alice")) and not sees(mascots, gone, None)
    assert not sees(mascots, missing.public_ids[0], owner("alice"))
    assert not sees(mascots, "not-an-id", owner("alice")) and not sees(mascots, "A" * 12, None)


def test_a_linked_device_sees_the_mascots_it_shows_and_not_its_own_kept_apart(mascots: MascotStore) -> None:
    [alices] = save(mascots, owner("alice"), "alice's", is_public=False).public_ids
    [phones] = save(mascots, owner("phone"), "the phone's own", is_public=False).public_ids
    code = mascots.make_device_link(owner("alice")).code

    assert mascots.redeem_device_link(owner("phone"), code).outcome == "joined"

    assert sees(mascots, alices, owner("phone"))
    assert not sees(mascots, phones, owner("phone"))  # kept apart until "Stop showing my mascots here"
    assert not sees(mascots, phones, owner("alice"))
