"""Reports and moderation in the store, on SQLite and PostgreSQL: one report per browser, hiding after reports from
enough networks, and the operator's hide, restore, delete and list."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest

from mascot.store.moderation import HIDDEN_AFTER_REPORTS, NOTES, TAKEN_DOWN, VISIBLE, ModerationBook
from mascot.store.store import MascotStore
from mascot.web.clients import AddressKeys
from tests.support.store import owner, save

KEYS = AddressKeys(b"s" * 40)
ALICE, BOB, CAROL, DAVE = owner("alice"), owner("bob"), owner("carol"), owner("dave")
HOME, OFFICE, CAFE, LIBRARY = (
    KEYS.address_hash(ip) for ip in ("203.0.113.7", "198.51.100.20", "192.0.2.5", "2001:db8::1")
)
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def report(mascots: MascotStore, who: str, public_id: str, network: str | None, reason: str = "", **kwargs: object):
    return mascots.report_mascot(who, public_id, reason, address_hash=network, **kwargs).outcome  # type: ignore[arg-type]


def report_from_networks(mascots: MascotStore, public_id: str, networks: list[str | None], **kwargs: object) -> None:
    """One new browser per network, each reporting once."""
    for number, network in enumerate(networks):
        assert report(mascots, owner(f"reporter {number} {network}"), public_id, network, **kwargs) == "reported"


def gallery_ids(mascots: MascotStore, viewer: str | None = None) -> list[str]:
    return [entry.public_id for entry in mascots.gallery(viewer).items]


def report_rows(mascots: MascotStore) -> int:
    return mascots.tables.report.select().count()


def test_a_browser_reports_a_mascot_once(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    assert report(mascots, BOB, public_id, HOME, "offensive") == "reported"
    assert report(mascots, BOB, public_id, OFFICE, "spam") == "already_reported"  # another network: still Bob

    assert report_rows(mascots) == 1
    [listed] = mascots.reported_mascots()
    assert (listed.reports, listed.reasons, listed.networks) == (1, {"offensive": 1}, 1)


def test_reports_from_many_cookies_on_one_network_never_hide_a_mascot(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    report_from_networks(mascots, public_id, [HOME, HOME, HOME, HOME])
    report_from_networks(mascots, public_id, [None, None, None])  # no readable address: counted by browser only

    assert report_rows(mascots) == 7
    assert gallery_ids(mascots) == [public_id] and mascots.count_gallery() == 1
    assert mascots.mascot(public_id, CAROL) is not None
    [listed] = mascots.reported_mascots()
    assert (listed.reports, listed.networks, listed.moderation) == (7, 1, VISIBLE)


def test_reports_from_three_networks_take_it_out_of_the_gallery_and_its_count(mascots: MascotStore) -> None:
    [kept] = save(mascots, BOB, "bob's fox", now=NOON).public_ids
    [reported] = save(mascots, ALICE, "alice's otter", now=NOON + timedelta(minutes=1)).public_ids
    report_from_networks(mascots, reported, [HOME, OFFICE])
    assert gallery_ids(mascots) == [reported, kept]  # two networks: not yet

    report_from_networks(mascots, reported, [CAFE])

    for viewer in (None, BOB, CAROL, owner("reporter 0 " + str(HOME)), ALICE):
        assert gallery_ids(mascots, viewer) == [kept]
        page = mascots.gallery(viewer, per_page=1)
        assert (page.total, page.has_next) == (1, False)
    assert mascots.count_gallery() == 1
    assert mascots.gallery(None, page=2, per_page=1).items == ()
    for stranger in (None, BOB, CAROL):
        assert mascots.mascot(reported, stranger) is None
    assert mascots.toggle_like(CAROL, reported) is None  # what a stranger cannot see, they cannot like


def test_the_owner_still_sees_a_hidden_mascot_with_its_note_and_may_delete_it(mascots: MascotStore) -> None:
    saved = save(mascots, ALICE, "alice's otter")
    [public_id] = saved.public_ids
    report_from_networks(mascots, public_id, [HOME, OFFICE, CAFE])

    [entry] = mascots.history(ALICE)
    own = mascots.mascot(public_id, ALICE)

    assert (entry.public_id, entry.moderation, entry.is_public) == (public_id, HIDDEN_AFTER_REPORTS, True)
    assert entry.moderation_note == "Hidden from the gallery after reports; the operator will review it."
    assert own is not None and own.is_owner and own.moderation_note == entry.moderation_note
    assert mascots.count_history(ALICE) == mascots.history_page(ALICE).total == 1
    assert mascots.set_public(ALICE, public_id, True) is False  # not while it is under review
    assert mascots.mascot(public_id, BOB) is None
    assert mascots.delete_mascot(ALICE, public_id) is True
    assert report_rows(mascots) == 0 and not saved.image_paths[0].exists()


def test_the_threshold_is_a_setting_and_0_never_hides(mascots: MascotStore) -> None:
    [never] = save(mascots, ALICE, "never hidden").public_ids
    [at_once] = save(mascots, ALICE, "hidden at once").public_ids

    report_from_networks(mascots, never, [HOME, OFFICE, CAFE, LIBRARY], reports_to_hide=0)
    report_from_networks(mascots, at_once, [HOME], reports_to_hide=1)

    assert gallery_ids(mascots) == [never]


def test_restoring_clears_the_reports_and_shows_the_mascot_again(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    report_from_networks(mascots, public_id, [HOME, OFFICE, CAFE])
    assert gallery_ids(mascots) == []

    assert mascots.restore_mascot(public_id) is True

    assert gallery_ids(mascots) == [public_id]
    assert mascots.mascot(public_id, BOB) is not None
    assert mascots.history(ALICE)[0].moderation_note == ""
    assert report_rows(mascots) == 0 and mascots.reported_mascots() == []


def test_reports_made_before_a_restore_no_longer_count(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    report_from_networks(mascots, public_id, [HOME, OFFICE])
    assert mascots.restore_mascot(public_id) is True  # reviewed before it was even hidden

    report_from_networks(mascots, public_id, [CAFE])
    assert gallery_ids(mascots) == [public_id]  # two before and one after the restore: not three
    report_from_networks(mascots, public_id, [LIBRARY])
    assert gallery_ids(mascots) == [public_id]

    report_from_networks(mascots, public_id, [HOME])  # a third network since the restore
    assert gallery_ids(mascots) == []


def test_the_owner_makes_a_restored_mascot_private_and_the_restore_keeps_that(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    report_from_networks(mascots, public_id, [HOME, OFFICE, CAFE])

    assert mascots.set_public(ALICE, public_id, False) is True  # hiding it further is always allowed
    assert mascots.restore_mascot(public_id) is True

    assert gallery_ids(mascots) == []  # back as its owner set it: private
    assert mascots.mascot(public_id, BOB) is None
    assert mascots.set_public(ALICE, public_id, True) is True
    assert gallery_ids(mascots) == [public_id]


def test_the_operator_hides_a_mascot_without_any_report(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    assert mascots.hide_mascot(public_id) is True

    assert gallery_ids(mascots) == [] and mascots.count_gallery() == 0
    assert mascots.mascot(public_id, BOB) is None
    assert mascots.history(ALICE)[0].moderation_note == NOTES[TAKEN_DOWN]
    assert report(mascots, BOB, public_id, HOME) == "not_found"  # gone for strangers, reports included
    [listed] = mascots.reported_mascots()
    assert (listed.public_id, listed.reports, listed.moderation) == (public_id, 0, TAKEN_DOWN)
    assert mascots.set_public(ALICE, public_id, True) is False
    assert mascots.restore_mascot(public_id) is True
    assert gallery_ids(mascots) == [public_id]


def test_reports_do_not_soften_an_operators_take_down(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    report_from_networks(mascots, public_id, [HOME, OFFICE])
    mascots.hide_mascot(public_id)

    assert mascots.reported_mascots()[0].moderation == TAKEN_DOWN
    assert mascots.history(ALICE)[0].moderation == TAKEN_DOWN


def test_deleting_a_mascot_deletes_its_reports_whoever_deletes_it(mascots: MascotStore) -> None:
    owners_delete = save(mascots, ALICE, "deleted by alice")
    operators_delete = save(mascots, ALICE, "deleted by the operator")
    [kept] = save(mascots, BOB, "kept").public_ids
    for saved in (owners_delete, operators_delete):
        report_from_networks(mascots, saved.public_ids[0], [HOME])
        mascots.toggle_like(CAROL, saved.public_ids[0])
    report_from_networks(mascots, kept, [OFFICE])

    assert mascots.delete_mascot(ALICE, owners_delete.public_ids[0]) is True
    assert mascots.delete_mascot_as_operator(operators_delete.public_ids[0]) == ALICE  # whose downloads go too

    assert report_rows(mascots) == 1 and mascots.tables.like.select().count() == 0
    assert [item.public_id for item in mascots.reported_mascots()] == [kept]
    for saved in (owners_delete, operators_delete):
        assert not saved.image_paths[0].exists() and not saved.thumbnail_paths[0].exists()
    assert [entry.request.prompt for entry in mascots.history(ALICE)] == []
    assert mascots.tables.generation.select().count() == 1
    assert mascots.delete_mascot_as_operator(operators_delete.public_ids[0]) is None


def test_reporting_your_own_mascot_is_refused(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    [private] = save(mascots, ALICE, is_public=False).public_ids

    assert report(mascots, ALICE, public_id, HOME) == "own_mascot"
    assert report(mascots, ALICE, private, HOME) == "own_mascot"

    assert report_rows(mascots) == 0
    result = mascots.report_mascot(ALICE, public_id)
    assert result.refused and "your own mascot" in result.message


@pytest.mark.parametrize("bad_id", ["A" * 12, "", "short", "../../etc/pa", "x" * 13])
def test_an_unknown_or_malformed_id_is_refused_and_changes_nothing(mascots: MascotStore, bad_id: str) -> None:
    save(mascots, ALICE)

    result = mascots.report_mascot(BOB, bad_id, "offensive", address_hash=HOME)

    assert (result.outcome, result.refused, result.message) == (
        "not_found",
        True,
        "This mascot is private or was deleted.",
    )
    assert report_rows(mascots) == 0
    assert mascots.hide_mascot(bad_id) is False
    assert mascots.restore_mascot(bad_id) is False
    assert mascots.delete_mascot_as_operator(bad_id) is None
    assert mascots.count_gallery() == 1


def test_another_browsers_private_mascot_cannot_be_reported(mascots: MascotStore) -> None:
    [private] = save(mascots, ALICE, is_public=False).public_ids

    assert report(mascots, BOB, private, HOME) == "not_found"
    assert report_rows(mascots) == 0


def test_an_unknown_reason_is_refused_naming_the_known_ones(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    with pytest.raises(ValueError, match="reason must be one of 'offensive', 'sexual', 'violence', 'spam'"):
        mascots.report_mascot(BOB, public_id, "boring")
    with pytest.raises(ValueError, match="address_hash"):
        mascots.report_mascot(BOB, public_id, address_hash="203.0.113.7")  # a raw address is never stored


def test_the_operators_list_shows_the_most_reported_first_with_reasons_and_networks(mascots: MascotStore) -> None:
    [once] = save(mascots, ALICE, "reported once", now=NOON).public_ids
    [thrice] = save(mascots, BOB, "reported thrice", now=NOON + timedelta(minutes=1)).public_ids
    [taken_down] = save(mascots, BOB, "taken down", now=NOON + timedelta(minutes=2)).public_ids
    save(mascots, BOB, "never reported")
    report(mascots, CAROL, once, HOME, "spam")
    report(mascots, CAROL, thrice, HOME, "offensive")
    report(mascots, DAVE, thrice, HOME, "offensive")
    report(mascots, ALICE, thrice, None)
    mascots.hide_mascot(taken_down)

    listed = mascots.reported_mascots()

    assert [item.public_id for item in listed] == [thrice, once, taken_down]
    first = listed[0]
    assert (first.reports, first.reasons, first.networks) == (3, {"offensive": 2, "": 1}, 1)
    assert (first.prompt, first.moderation) == ("reported thrice", VISIBLE)
    assert first.path == mascots.history(BOB)[-1].path and first.path.is_file()


def test_two_reports_at_once_from_two_networks_count_each_other(
    mascots: MascotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst timing: each report is written before either counts. Without the row lock (PostgreSQL; SQLite's
    write transactions take turns) each would count only itself and the mascot would stay."""
    [public_id] = save(mascots, ALICE).public_ids
    both_written = threading.Barrier(2)
    count_networks = ModerationBook.networks_reporting

    def count_when_both_are_written(book: ModerationBook, image_id: int) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):  # the other report waits for this one: go on
            both_written.wait(timeout=2)
        return count_networks(book, image_id)

    monkeypatch.setattr(ModerationBook, "networks_reporting", count_when_both_are_written)
    errors: list[Exception] = []

    def send(who: str, network: str | None) -> None:
        try:
            assert report(mascots, who, public_id, network, reports_to_hide=2) == "reported"
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)
        finally:
            mascots.close()

    threads = [threading.Thread(target=send, args=(BOB, HOME)), threading.Thread(target=send, args=(CAROL, OFFICE))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert report_rows(mascots) == 2
    assert gallery_ids(mascots) == []
