"""The daily quota per network address, shared by every browser on it, kept in the database on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import peewee
import pytest

from mascot.store.quota import JOB_STALE_AFTER, ClaimResult, QuotaStatus
from mascot.store.store import MascotStore
from mascot.web.clients import AddressKeys, network_of
from tests.support.store import OpenStore, owner, save

KEYS = AddressKeys(b"s" * 40)
ALICE, BOB, CAROL = owner("alice"), owner("bob"), owner("carol")
HOME_IP, OFFICE_IP = "203.0.113.7", "198.51.100.20"
HOME, OFFICE = KEYS.address_hash(HOME_IP), KEYS.address_hash(OFFICE_IP)
BROWSER_LIMIT, NETWORK_LIMIT = 10, 5
MORNING = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
MIDNIGHT = datetime(2025, 3, 15, 0, 0, tzinfo=UTC)


def claim(
    mascots: MascotStore, who: str, network: str | None, count: int = 1, now: datetime = MORNING, **limits: int
) -> ClaimResult:
    return mascots.claim_job(
        who,
        count,
        limits.get("limit", BROWSER_LIMIT),
        now,
        address_hash=network,
        address_limit=limits.get("address_limit", NETWORK_LIMIT),
    )


def make(mascots: MascotStore, who: str, network: str | None, count: int = 1, now: datetime = MORNING) -> None:
    """What the app does for one request: claim, save the images under the same network, release."""
    claimed = claim(mascots, who, network, count, now)
    assert claimed.claimed, claimed.message
    save(mascots, who, count=count, now=now, address_hash=network)
    assert mascots.release_job(who, claimed.claim_id)


def network_quota(mascots: MascotStore, network: str | None, now: datetime = MORNING) -> QuotaStatus:
    assert network is not None
    return mascots.address_quota(network, NETWORK_LIMIT, now)


def test_two_browsers_on_one_network_share_its_quota_and_another_network_is_unaffected(mascots: MascotStore) -> None:
    make(mascots, ALICE, HOME, count=3)

    refused = claim(mascots, BOB, HOME, count=3)

    assert (refused.claimed, refused.reason) == (False, "over_address_quota")
    assert refused.quota.remaining == BROWSER_LIMIT  # Bob's own quota is untouched: the network's is what ran out
    assert refused.address_quota == QuotaStatus(used=3, limit=5, in_flight=0, remaining=2, resets_at=MIDNIGHT)
    assert refused.message == (
        "Your network has 2 of its 5 mascots left today (everyone on your internet connection shares them): "
        "ask for fewer, or come back in 15 h 0 min (00:00 UTC on 2025-03-15)."
    )
    make(mascots, BOB, HOME, count=2)
    spent = claim(mascots, ALICE, HOME)
    assert spent.reason == "over_address_quota"
    assert spent.message.startswith("Your network has made its 5 mascots for today")
    assert claim(mascots, CAROL, OFFICE, count=5).claimed  # another address has its own
    assert network_quota(mascots, OFFICE).in_flight == 5
    assert network_quota(mascots, HOME) == QuotaStatus(used=5, limit=5, in_flight=0, remaining=0, resets_at=MIDNIGHT)


def test_ipv6_addresses_in_one_64_count_together_and_other_64s_do_not(mascots: MascotStore) -> None:
    laptop = KEYS.address_hash("2001:db8:aa:1::10")
    phone = KEYS.address_hash("2001:db8:aa:1:8c3e:12ff:fe34:5678")  # same /64, another interface id
    neighbour = KEYS.address_hash("2001:db8:aa:2::10")  # the next /64
    assert laptop == phone != neighbour
    make(mascots, ALICE, laptop, count=4)

    assert claim(mascots, BOB, phone, count=2).reason == "over_address_quota"
    assert claim(mascots, CAROL, neighbour, count=4).claimed


def test_a_network_cap_of_0_turns_the_network_quota_off(mascots: MascotStore) -> None:
    for who in (ALICE, BOB, CAROL):
        granted = claim(mascots, who, HOME, count=4, address_limit=0)
        assert granted.claimed and granted.address_quota is None
        save(mascots, who, count=4, now=MORNING, address_hash=HOME)
        mascots.release_job(who, granted.claim_id)

    assert claim(mascots, owner("dave"), HOME, count=4, address_limit=0).claimed  # 16 from one address
    assert network_quota(mascots, HOME).used == 12  # still counted, so turning the cap on later counts the day


def test_a_request_without_a_network_has_only_the_browser_quota(mascots: MascotStore) -> None:
    make(mascots, ALICE, HOME, count=4)
    make(mascots, ALICE, HOME, count=1)

    granted = claim(mascots, BOB, None, count=4)

    assert granted.claimed and granted.address_quota is None
    assert network_quota(mascots, HOME).in_flight == 0


def test_the_network_quota_really_resets_at_midnight_utc(mascots: MascotStore) -> None:
    just_before = MIDNIGHT - timedelta(microseconds=1)
    make(mascots, ALICE, HOME, count=4, now=MIDNIGHT - timedelta(seconds=30))
    make(mascots, BOB, HOME, count=1, now=MIDNIGHT - timedelta(seconds=20))

    assert claim(mascots, CAROL, HOME, now=just_before).reason == "over_address_quota"
    assert network_quota(mascots, HOME, MIDNIGHT) == QuotaStatus(
        used=0, limit=5, in_flight=0, remaining=5, resets_at=MIDNIGHT + timedelta(days=1)
    )
    make(mascots, BOB, HOME, count=2, now=MIDNIGHT + timedelta(seconds=1))
    assert network_quota(mascots, HOME, MIDNIGHT + timedelta(hours=1)).used == 2  # the new day counts alone
    assert claim(mascots, ALICE, HOME, count=4, now=MIDNIGHT + timedelta(hours=1)).reason == "over_address_quota"
    assert claim(mascots, ALICE, HOME, count=3, now=MIDNIGHT + timedelta(hours=1)).claimed


def test_images_in_flight_count_and_failed_or_cancelled_jobs_cost_the_network_nothing(mascots: MascotStore) -> None:
    running = claim(mascots, ALICE, HOME, count=4)
    assert network_quota(mascots, HOME).in_flight == 4
    assert claim(mascots, BOB, HOME, count=2).reason == "over_address_quota"  # 4 in flight + 2 > 5

    mascots.release_job(ALICE, running.claim_id)  # the job failed or was cancelled: nothing saved

    assert network_quota(mascots, HOME) == QuotaStatus(used=0, limit=5, in_flight=0, remaining=5, resets_at=MIDNIGHT)
    assert claim(mascots, BOB, HOME, count=5).claimed


def test_a_stale_claim_holds_none_of_the_networks_quota(mascots: MascotStore) -> None:
    claim(mascots, ALICE, HOME, count=5)  # its process dies and never releases it
    later = MORNING + JOB_STALE_AFTER + timedelta(seconds=1)

    assert network_quota(mascots, HOME, later).remaining == 5
    assert claim(mascots, BOB, HOME, count=5, now=later).claimed


def test_deleting_a_mascot_does_not_hand_the_networks_quota_back(mascots: MascotStore) -> None:
    make(mascots, ALICE, HOME, count=1)
    [entry] = mascots.history(ALICE)

    assert mascots.delete_mascot(ALICE, entry.public_id)

    assert network_quota(mascots, HOME).used == 1


def test_the_browsers_own_refusals_come_before_the_networks(mascots: MascotStore) -> None:
    make(mascots, ALICE, HOME, count=4)
    make(mascots, ALICE, HOME, count=1)
    running = claim(mascots, BOB, OFFICE)

    over_both = claim(mascots, ALICE, HOME, limit=5)
    busy_on_a_spent_network = claim(mascots, BOB, HOME)

    assert over_both.reason == "over_quota" and over_both.message.startswith("You have made your 5 mascots")
    assert busy_on_a_spent_network.reason == "job_in_flight"
    assert mascots.release_job(BOB, running.claim_id)


def test_simultaneous_claims_from_one_network_never_exceed_its_quota(open_store: OpenStore) -> None:
    browsers = [owner(f"browser {index}") for index in range(8)]
    stores = [open_store() for _ in browsers]  # a replica each: separate connections
    for round_ in range(5):  # a race lost once in a while must still show up
        network = KEYS.address_hash(f"192.0.2.{round_}")
        results = claim_at_once(stores, browsers, network)

        assert sorted(results) == ["claimed"] * 2 + ["over_address_quota"] * 6  # 2 + 2 <= 5 < 2 + 2 + 2
        assert network_quota(stores[0], network).in_flight == 4
        for who in browsers:
            stores[0].release_job(who)


def claim_at_once(stores: list[MascotStore], browsers: list[str], network: str | None) -> list[str]:
    """Each browser asks for 2 images from `network` through its own replica, all at the same moment."""
    reasons: list[str] = []
    errors: list[Exception] = []
    start = threading.Barrier(len(browsers))

    def claim_one(mascots: MascotStore, who: str) -> None:
        try:
            start.wait()
            reasons.append(claim(mascots, who, network, count=2).reason)
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)
        finally:
            mascots.close()

    threads = [threading.Thread(target=claim_one, args=pair) for pair in zip(stores, browsers, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return reasons


def test_the_network_quota_holds_across_replicas(open_store: OpenStore) -> None:
    replica_one, replica_two = open_store(), open_store()
    make(replica_one, ALICE, HOME, count=4)

    assert claim(replica_two, BOB, HOME, count=2).reason == "over_address_quota"
    assert claim(replica_two, BOB, HOME, count=1).claimed


def test_the_raw_address_is_stored_nowhere(mascots: MascotStore) -> None:
    ipv6 = "2001:db8:aa:1:8c3e:12ff:fe34:5678"
    make(mascots, ALICE, HOME, count=2)
    make(mascots, BOB, KEYS.address_hash(ipv6))
    claim(mascots, CAROL, OFFICE)  # in flight

    stored = every_stored_text(mascots.database)

    assert HOME in stored and OFFICE in stored  # the keyed hashes are what is kept...
    for secret in (HOME_IP, OFFICE_IP, ipv6, network_of(ipv6), "2001:db8:aa:1", "203.0.113", "198.51.100"):
        assert secret and secret not in stored  # ...never an address or its network, whole or in part


def test_only_a_hash_is_accepted_as_a_network(mascots: MascotStore) -> None:
    with pytest.raises(ValueError, match="address_hash"):
        claim(mascots, ALICE, HOME_IP)
    with pytest.raises(ValueError, match="address_hash"):
        save(mascots, ALICE, address_hash=HOME_IP)
    with pytest.raises(ValueError, match="address_hash"):
        mascots.address_quota(HOME_IP, NETWORK_LIMIT)
    with pytest.raises(ValueError, match="limit"):
        claim(mascots, ALICE, HOME, address_limit=-1)


def every_stored_text(db: peewee.Database) -> str:
    """Every value of every column of every table, as text, one per line."""
    schema = (
        db.execute_sql("SELECT current_schema()").fetchone()[0] if isinstance(db, peewee.PostgresqlDatabase) else None
    )
    values: list[str] = []
    for table in db.get_tables(schema=schema):
        for row in db.execute_sql(f'SELECT * FROM "{table}"').fetchall():
            values.extend(str(value) for value in row)
    assert values  # there is something to search
    return "\n".join(values)
