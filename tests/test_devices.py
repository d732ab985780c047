"""Device links on a real store (SQLite, and PostgreSQL when set): codes, aliases, merging one browser into another."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from mascot.store.device_links import CODE_PATTERN, LINK_VALID_FOR, MAX_OPEN_LINKS, code_hash
from mascot.store.store import MascotStore, TooManyLinks
from tests.support.store import OpenStore, owner, save

NOW = datetime(2026, 11, 25, 12, 0)
NETWORK = "cd" * 32


def prompts(mascots: MascotStore, who: str) -> list[str]:
    return [entry.request.prompt for entry in mascots.history(who)]


def link_rows(mascots: MascotStore) -> list[tuple[str, object]]:
    link = mascots.tables.device_link
    return list(link.select(link.code_hash, link.used_at).tuples())


# ---- codes ----------------------------------------------------------------------------------------------------------
def test_a_code_is_long_random_and_only_its_hash_is_stored(mascots: MascotStore) -> None:
    made = mascots.make_device_link(owner("alice"), NOW)

    assert CODE_PATTERN.fullmatch(made.code) and made.expires_at == NOW + LINK_VALID_FOR
    assert link_rows(mascots) == [(code_hash(made.code), None)]
    stored = mascots.database.execute_sql("SELECT * FROM device_link").fetchall()
    assert made.code not in repr(stored)
    assert mascots.make_device_link(owner("alice"), NOW).code != made.code


def test_a_code_works_once(mascots: MascotStore) -> None:
    save(mascots, owner("alice"), "alice's otter")
    made = mascots.make_device_link(owner("alice"), NOW)

    assert mascots.redeem_device_link(owner("phone"), made.code, now=NOW).outcome == "joined"
    assert mascots.redeem_device_link(owner("carol"), made.code, now=NOW).outcome == "invalid"

    assert mascots.resolve_owner(owner("phone")) == owner("alice")
    assert mascots.resolve_owner(owner("carol")) == owner("carol")
    assert prompts(mascots, owner("carol")) == []


def test_a_code_expires_after_fifteen_minutes(mascots: MascotStore) -> None:
    made = mascots.make_device_link(owner("alice"), NOW)

    late = NOW + LINK_VALID_FOR
    assert mascots.redeem_device_link(owner("phone"), made.code, now=late).outcome == "invalid"
    assert mascots.redeem_device_link(owner("phone"), made.code, now=late - timedelta(seconds=1)).outcome == "joined"


@pytest.mark.parametrize("code", ["", "short", "x" * 33, "é" * 32, "a/" * 16, "A" * 32, None])
def test_an_unknown_or_malformed_code_changes_nothing(mascots: MascotStore, code: object) -> None:
    save(mascots, owner("phone"), "the phone's fox")

    assert mascots.redeem_device_link(owner("phone"), code, now=NOW).outcome == "invalid"  # type: ignore[arg-type]
    assert prompts(mascots, owner("phone")) == ["the phone's fox"]


def test_at_most_five_open_codes_per_browser_and_spent_or_expired_ones_do_not_count(mascots: MascotStore) -> None:
    codes = [mascots.make_device_link(owner("alice"), NOW).code for _ in range(MAX_OPEN_LINKS)]
    with pytest.raises(TooManyLinks):
        mascots.make_device_link(owner("alice"), NOW)
    mascots.make_device_link(owner("bob"), NOW)  # another browser has its own five

    assert mascots.redeem_device_link(owner("phone"), codes[0], now=NOW).outcome == "joined"
    mascots.make_device_link(owner("alice"), NOW)  # a spent code frees a place
    with pytest.raises(TooManyLinks):
        mascots.make_device_link(owner("alice"), NOW)
    later = NOW + LINK_VALID_FOR
    mascots.make_device_link(owner("alice"), later)  # all of them expired
    assert len(link_rows(mascots)) == 1  # and were cleared away


def test_the_phone_makes_a_link_for_the_browser_it_stands_for(mascots: MascotStore) -> None:
    save(mascots, owner("alice"), "alice's otter")
    mascots.redeem_device_link(owner("phone"), mascots.make_device_link(owner("alice"), NOW).code, now=NOW)

    made = mascots.make_device_link(owner("phone"), NOW)  # as the page would ask, had it not resolved first
    assert mascots.redeem_device_link(owner("tablet"), made.code, now=NOW).outcome == "joined"

    assert prompts(mascots, mascots.resolve_owner(owner("tablet"))) == ["alice's otter"]
    assert mascots.tables.browser.select().count() == 1


def test_two_redemptions_of_one_code_at_once_one_wins(open_store: OpenStore) -> None:
    first = open_store()
    save(first, owner("alice"), "alice's otter")
    made = first.make_device_link(owner("alice"), NOW)
    stores = [first, open_store()]  # two replicas on one database
    barrier, outcomes = threading.Barrier(2), []

    def redeem(mascots: MascotStore, who: str) -> None:
        barrier.wait()
        outcomes.append(mascots.redeem_device_link(owner(who), made.code, now=NOW).outcome)
        mascots.close()

    threads = [
        threading.Thread(target=redeem, args=(s, name)) for s, name in zip(stores, ["phone", "tablet"], strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["invalid", "joined"]
    winners = [name for name in ("phone", "tablet") if first.resolve_owner(owner(name)) == owner("alice")]
    assert len(winners) == 1


def test_opening_ones_own_link_changes_nothing_and_keeps_the_code(mascots: MascotStore) -> None:
    save(mascots, owner("alice"), "alice's otter")
    made = mascots.make_device_link(owner("alice"), NOW)

    assert mascots.redeem_device_link(owner("alice"), made.code, now=NOW).outcome == "already"
    assert link_rows(mascots) == [(code_hash(made.code), None)]
    assert mascots.redeem_device_link(owner("phone"), made.code, now=NOW).outcome == "joined"
    assert mascots.redeem_device_link(owner("phone"), made.code, now=NOW).outcome == "already"  # a reload


# ---- resolution -------------------------------------------------------------------------------------------------
def test_the_page_resolves_a_linked_browser_to_the_owner_it_stands_for(mascots: MascotStore) -> None:
    mascots.redeem_device_link(owner("phone"), mascots.make_device_link(owner("alice"), NOW).code, now=NOW)

    assert mascots.resolve_owner(owner("phone")) == mascots.resolve_owner(owner("alice")) == owner("alice")
    assert mascots.resolve_owner(owner("new")) == owner("new")


# ---- merging -------------------------------------------------------------------------------------------------------
def test_the_phones_own_mascots_likes_and_reports_move_over(mascots: MascotStore) -> None:
    alice, phone, stranger = owner("alice"), owner("phone"), owner("stranger")
    otter = save(mascots, alice, "alice's otter").public_ids[0]
    fox = save(mascots, phone, "the phone's fox", count=2).public_ids[0]
    gull = save(mascots, stranger, "a stranger's gull").public_ids[0]
    crab = save(mascots, stranger, "a stranger's crab").public_ids[0]
    mascots.toggle_like(alice, gull, address_hash=NETWORK)
    mascots.toggle_like(phone, gull, address_hash=NETWORK)  # both liked it: one like remains
    mascots.toggle_like(phone, crab)
    mascots.toggle_like(phone, otter)  # the phone liked Alice's own mascot: a like of one's own, allowed
    mascots.report_mascot(phone, gull, "spam")
    mascots.report_mascot(alice, gull, "spam")  # both reported it: one report remains
    mascots.report_mascot(phone, crab, "violence")
    mascots.report_mascot(alice, fox, "spam")  # Alice reported the phone's fox, which becomes her own
    assert mascots.mascot(gull, None).like_count == 2

    redeemed = mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW, move_mascots=True)

    assert (redeemed.outcome, redeemed.moved_images, redeemed.left_others) == ("joined", 2, False)
    assert prompts(mascots, alice) == ["the phone's fox", "the phone's fox", "alice's otter"]
    assert mascots.history(alice)[0].is_owner
    assert mascots.mascot(gull, alice).liked_by_viewer and mascots.mascot(gull, None).like_count == 1
    assert mascots.mascot(crab, alice).liked_by_viewer and mascots.mascot(otter, alice).liked_by_viewer
    assert [entry.public_id for entry in mascots.gallery(alice, sort="liked").items] == [otter, crab, gull]
    reports = {(row.public_id, tuple(sorted(row.reasons))) for row in mascots.reported_mascots()}
    assert reports == {(gull, ("spam",)), (crab, ("violence",))}  # the report of her own fox is gone
    assert mascots.tables.browser.select().count() == 2  # Alice and the stranger: the phone's row is gone
    assert mascots.delete_mascot(alice, fox)  # the fox is Alice's now


def test_todays_quota_of_both_adds_up_and_yesterdays_does_not(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    save(mascots, alice, "yesterday", count=3, now=NOW - timedelta(days=1))
    save(mascots, alice, "today", count=2, now=NOW)
    save(mascots, phone, "the phone's today", count=4, now=NOW)

    mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW, move_mascots=True)

    assert mascots.quota(alice, 10, NOW).used == 6
    assert mascots.quota(mascots.resolve_owner(phone), 10, NOW).remaining == 4


def test_a_phone_that_only_made_mascots_yesterday_brings_no_quota_and_alice_keeps_hers(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    save(mascots, phone, "the phone's yesterday", count=4, now=NOW - timedelta(days=1))
    save(mascots, alice, "today", count=1, now=NOW)

    mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW)

    assert mascots.quota(alice, 10, NOW).used == 1


def test_a_phone_with_a_mascot_being_made_is_told_to_wait_and_nothing_changes(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    save(mascots, phone, "the phone's fox")
    claim = mascots.claim_job(phone, 1, 10, NOW)
    made = mascots.make_device_link(alice, NOW)

    assert mascots.redeem_device_link(phone, made.code, now=NOW).outcome == "job_in_flight"
    assert mascots.resolve_owner(phone) == phone and prompts(mascots, phone) == ["the phone's fox"]
    assert link_rows(mascots) == [(code_hash(made.code), None)]  # the code still works

    mascots.release_job(phone, claim.claim_id)
    assert mascots.redeem_device_link(phone, made.code, now=NOW).outcome == "joined"


def test_a_linked_phone_with_a_mascot_being_made_is_told_to_wait_before_it_follows_another(
    mascots: MascotStore,
) -> None:
    """Its mascot is claimed on the row it stands for: following another browser's link meanwhile, it would be saved
    where the phone no longer looks (a review of the store found it let through)."""
    save(mascots, owner("gail"), "gail's otter")
    mascots.redeem_device_link(owner("phone"), mascots.make_device_link(owner("harry"), NOW).code, now=NOW)
    claim = mascots.claim_job(mascots.resolve_owner(owner("phone")), 1, now=NOW)
    assert claim.claimed
    code = mascots.make_device_link(owner("gail"), NOW).code

    assert mascots.redeem_device_link(owner("phone"), code, now=NOW).outcome == "job_in_flight"
    assert mascots.resolve_owner(owner("phone")) == owner("harry")

    mascots.release_job(owner("harry"), claim.claim_id)
    assert mascots.redeem_device_link(owner("phone"), code, now=NOW).outcome == "joined"


def test_alices_own_mascot_being_made_does_not_stop_the_phone_joining(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    claim = mascots.claim_job(alice, 1, 10, NOW)

    assert mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW).outcome == "joined"

    assert mascots.claim_job(phone := mascots.resolve_owner(phone), 1, 10, NOW).reason == "job_in_flight"
    assert mascots.release_job(phone, claim.claim_id)


def test_a_stale_claim_of_a_stopped_process_does_not_stop_the_phone_joining(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    mascots.claim_job(phone, 1, 10, NOW - timedelta(hours=1))

    assert mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW).outcome == "joined"


# ---- chains -------------------------------------------------------------------------------------------------------
def test_a_phone_linked_to_bob_that_opens_alices_link_follows_alice_and_bob_keeps_his(mascots: MascotStore) -> None:
    alice, bob, phone = owner("alice"), owner("bob"), owner("phone")
    save(mascots, alice, "alice's otter")
    save(mascots, bob, "bob's bear")
    mascots.redeem_device_link(phone, mascots.make_device_link(bob, NOW).code, now=NOW)
    assert prompts(mascots, mascots.resolve_owner(phone)) == ["bob's bear"]

    redeemed = mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW)

    assert (redeemed.outcome, redeemed.moved_images, redeemed.left_others) == ("joined", 0, True)
    assert prompts(mascots, mascots.resolve_owner(phone)) == ["alice's otter"]
    assert prompts(mascots, bob) == ["bob's bear"]
    assert mascots.tables.browser_key.select().count() == 1


def test_merging_a_browser_brings_its_other_devices_along(mascots: MascotStore) -> None:
    alice, bob, bobs_phone = owner("alice"), owner("bob"), owner("bob's phone")
    save(mascots, alice, "alice's otter")
    save(mascots, bob, "bob's bear")
    mascots.redeem_device_link(bobs_phone, mascots.make_device_link(bob, NOW).code, now=NOW, move_mascots=True)

    # Bob's laptop joins Alice
    mascots.redeem_device_link(bob, mascots.make_device_link(alice, NOW).code, now=NOW, move_mascots=True)

    for who in (alice, bob, bobs_phone):
        assert sorted(prompts(mascots, mascots.resolve_owner(who))) == ["alice's otter", "bob's bear"]
    assert mascots.tables.browser.select().count() == 1


def test_the_phones_unused_links_die_with_its_row(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    phones_code = mascots.make_device_link(phone, NOW).code

    mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW)

    assert mascots.redeem_device_link(owner("tablet"), phones_code, now=NOW).outcome == "invalid"


# ---- disconnecting --------------------------------------------------------------------------------------------------
def linked(mascots: MascotStore, first: str, *others: str) -> None:
    """Link each of `others` to `first` through a device link, as the page does."""
    for other in others:
        code = mascots.make_device_link(mascots.resolve_owner(owner(first)), NOW).code
        assert mascots.redeem_device_link(owner(other), code, now=NOW).outcome == "joined"


def test_each_device_counts_the_others_that_show_the_same_mascots(mascots: MascotStore) -> None:
    save(mascots, owner("laptop"), "the laptop's otter")
    assert mascots.other_devices(owner("laptop")) == 0
    linked(mascots, "laptop", "phone", "tablet")

    assert [mascots.other_devices(owner(name)) for name in ("laptop", "phone", "tablet")] == [2, 2, 2]
    assert mascots.other_devices(owner("stranger")) == 0


def test_the_first_browser_disconnects_the_others_and_keeps_its_mascots(mascots: MascotStore) -> None:
    save(mascots, owner("laptop"), "the laptop's otter")
    linked(mascots, "laptop", "phone", "tablet")

    done = mascots.disconnect_other_devices(owner("laptop"), now=NOW)

    assert (done.outcome, done.devices) == ("disconnected", 2)
    assert prompts(mascots, mascots.resolve_owner(owner("laptop"))) == ["the laptop's otter"]
    for other in ("phone", "tablet"):
        assert mascots.resolve_owner(owner(other)) == owner(other)
        assert prompts(mascots, owner(other)) == []
    assert mascots.disconnect_other_devices(owner("laptop"), now=NOW).outcome == "none"


def test_a_linked_phone_disconnects_the_others_and_the_first_browser_too(mascots: MascotStore) -> None:
    """A link that leaked: from the phone, nobody else keeps access, not even the browser that made them first."""
    save(mascots, owner("laptop"), "the laptop's otter")
    linked(mascots, "laptop", "phone", "stranger")
    mascots.toggle_like(mascots.resolve_owner(owner("phone")), mascots.history(owner("laptop"))[0].public_id, now=NOW)

    done = mascots.disconnect_other_devices(owner("phone"), now=NOW)

    assert (done.outcome, done.devices) == ("disconnected", 2)
    assert mascots.resolve_owner(owner("phone")) == owner("phone")  # the row is the phone's own now
    [otter] = mascots.history(owner("phone"))
    assert otter.request.prompt == "the laptop's otter" and otter.is_owner and otter.liked_by_viewer
    assert prompts(mascots, mascots.resolve_owner(owner("laptop"))) == []
    assert prompts(mascots, mascots.resolve_owner(owner("stranger"))) == []
    assert mascots.tables.browser_key.select().count() == 0


def test_disconnecting_from_a_linked_phone_waits_for_the_mascot_being_made(mascots: MascotStore) -> None:
    linked(mascots, "laptop", "phone")
    claim = mascots.claim_job(owner("laptop"), 1, 10, NOW)

    assert mascots.disconnect_other_devices(owner("phone"), now=NOW).outcome == "job_in_flight"
    assert mascots.resolve_owner(owner("phone")) == owner("laptop")  # nothing changed

    mascots.release_job(owner("laptop"), claim.claim_id)
    assert mascots.disconnect_other_devices(owner("phone"), now=NOW).outcome == "disconnected"


def test_a_phone_stops_showing_the_mascots_and_the_first_browser_keeps_them(mascots: MascotStore) -> None:
    save(mascots, owner("laptop"), "the laptop's otter")
    linked(mascots, "laptop", "phone")

    assert mascots.stop_showing_here(owner("phone")) is True

    assert mascots.resolve_owner(owner("phone")) == owner("phone") and prompts(mascots, owner("phone")) == []
    assert prompts(mascots, owner("laptop")) == ["the laptop's otter"]
    assert mascots.stop_showing_here(owner("phone")) is False
    assert mascots.stop_showing_here(owner("laptop")) is False  # the first browser is not linked to anyone


# ---- a link from someone else ---------------------------------------------------------------------------------
def test_opening_someone_elses_link_hands_them_nothing_the_opener_made_before(mascots: MascotStore) -> None:
    """A link sent as "look at my mascot": the opener's own mascots stay out of the maker's reach."""
    attacker, victim = owner("attacker"), owner("victim")
    save(mascots, attacker, "the attacker's bait")
    secret = save(mascots, victim, "the victim's private plan").public_ids[0]
    assert mascots.set_public(victim, secret, False)
    assert mascots.own_mascot_count(victim) == 1

    redeemed = mascots.redeem_device_link(victim, mascots.make_device_link(attacker, NOW).code, now=NOW)

    assert (redeemed.outcome, redeemed.moved_images, redeemed.kept_images) == ("joined", 0, 1)
    assert prompts(mascots, attacker) == ["the attacker's bait"]
    assert mascots.mascot(secret, attacker) is None
    assert not mascots.delete_mascot(attacker, secret)
    assert mascots.is_linked_device(victim) and not mascots.is_linked_device(attacker)
    # Stopping shows the victim's own mascots again, untouched.
    assert mascots.stop_showing_here(victim)
    assert prompts(mascots, mascots.resolve_owner(victim)) == ["the victim's private plan"]
    assert mascots.mascot(secret, victim).is_owner


def test_keeping_ones_mascots_apart_still_counts_todays_quota(mascots: MascotStore) -> None:
    alice, phone = owner("alice"), owner("phone")
    save(mascots, alice, "today", count=2, now=NOW)
    save(mascots, phone, "the phone's today", count=4, now=NOW)

    mascots.redeem_device_link(phone, mascots.make_device_link(alice, NOW).code, now=NOW)

    assert mascots.quota(alice, 10, NOW).used == 6  # opening a link hands out no extra quota


def test_move_mascots_must_be_a_boolean(mascots: MascotStore) -> None:
    code = mascots.make_device_link(owner("alice"), NOW).code
    with pytest.raises(ValueError, match="move_mascots"):
        mascots.redeem_device_link(owner("phone"), code, now=NOW, move_mascots="false")  # type: ignore[arg-type]


# ---- open links ----------------------------------------------------------------------------------------------------
def test_open_links_are_listed_and_revoked(mascots: MascotStore) -> None:
    laptop = owner("laptop")
    first = mascots.make_device_link(laptop, NOW)
    mascots.make_device_link(laptop, NOW + timedelta(minutes=1))
    assert [link.expires_at for link in mascots.open_device_links(laptop, NOW + timedelta(minutes=2))] == [
        first.expires_at,
        NOW + timedelta(minutes=1) + LINK_VALID_FOR,
    ]
    assert mascots.open_device_links(owner("stranger"), NOW) == []

    assert mascots.revoke_device_links(laptop) == 2

    assert mascots.open_device_links(laptop, NOW) == []
    assert mascots.redeem_device_link(owner("phone"), first.code, now=NOW).outcome == "invalid"


def test_disconnecting_revokes_every_open_link(mascots: MascotStore) -> None:
    """A disconnected device must not rejoin with a link it made earlier."""
    save(mascots, owner("laptop"), "the laptop's otter")
    linked(mascots, "laptop", "phone")
    made_on_laptop = mascots.make_device_link(owner("laptop"), NOW).code
    made_on_phone = mascots.make_device_link(mascots.resolve_owner(owner("phone")), NOW).code

    done = mascots.disconnect_other_devices(owner("phone"), now=NOW)

    assert (done.outcome, done.devices, done.revoked_links) == ("disconnected", 1, 2)
    for code in (made_on_laptop, made_on_phone):
        assert mascots.redeem_device_link(owner("laptop"), code, now=NOW).outcome == "invalid"
    assert mascots.resolve_owner(owner("laptop")) == owner("laptop")


def test_disconnecting_with_only_an_open_link_revokes_it(mascots: MascotStore) -> None:
    save(mascots, owner("laptop"), "the laptop's otter")
    code = mascots.make_device_link(owner("laptop"), NOW).code

    done = mascots.disconnect_other_devices(owner("laptop"), now=NOW)

    assert (done.outcome, done.devices, done.revoked_links) == ("disconnected", 0, 1)
    assert mascots.redeem_device_link(owner("phone"), code, now=NOW).outcome == "invalid"
