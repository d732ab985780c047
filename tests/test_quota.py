"""The daily quota and the one job in flight per browser, kept in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mascot.store.quota import JOB_STALE_AFTER, ClaimResult, QuotaStatus
from mascot.store.store import MascotStore
from tests.support.store import OpenStore, owner, save

ALICE, BOB = owner("alice"), owner("bob")
LIMIT = 10
MORNING = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
MIDNIGHT = datetime(2025, 3, 15, 0, 0, tzinfo=UTC)


def test_the_quota_counts_the_images_saved_today(mascots: MascotStore) -> None:
    save(mascots, ALICE, count=3, now=MORNING)
    save(mascots, ALICE, count=1, now=MORNING + timedelta(hours=2))

    assert mascots.quota(ALICE, LIMIT, MORNING + timedelta(hours=3)) == QuotaStatus(
        used=4, limit=LIMIT, in_flight=0, remaining=6, resets_at=MIDNIGHT
    )
    assert mascots.quota(BOB, LIMIT, MORNING).used == 0  # per browser
    assert mascots.quota(owner("never seen"), LIMIT, MORNING).remaining == LIMIT


def test_the_quota_really_resets_at_midnight_utc(mascots: MascotStore) -> None:
    just_before = MIDNIGHT - timedelta(microseconds=1)
    save(mascots, ALICE, count=4, now=MIDNIGHT - timedelta(seconds=30))

    assert mascots.quota(ALICE, 4, just_before).remaining == 0
    assert not mascots.claim_job(ALICE, 1, 4, just_before).claimed
    assert mascots.quota(ALICE, 4, MIDNIGHT) == QuotaStatus(
        used=0, limit=4, in_flight=0, remaining=4, resets_at=MIDNIGHT + timedelta(days=1)
    )
    assert mascots.claim_job(ALICE, 4, 4, MIDNIGHT).claimed
    mascots.release_job(ALICE)
    save(mascots, ALICE, count=1, now=MIDNIGHT + timedelta(seconds=1))
    assert mascots.quota(ALICE, 4, MIDNIGHT + timedelta(hours=1)).used == 1  # the new day counts alone
    assert mascots.quota(ALICE, 4, MIDNIGHT + timedelta(days=1)).used == 0


def test_days_are_utc_days_whatever_the_timezone_of_now(mascots: MascotStore) -> None:
    save(mascots, ALICE, count=2, now=MORNING)
    late_evening_utc_seen_from_athens = datetime(2025, 3, 15, 1, 30, tzinfo=timezone(timedelta(hours=2)))

    quota = mascots.quota(ALICE, LIMIT, late_evening_utc_seen_from_athens)

    assert (quota.used, quota.resets_at) == (2, MIDNIGHT)


def test_a_second_job_in_flight_is_refused_until_the_first_is_released(mascots: MascotStore) -> None:
    first = mascots.claim_job(ALICE, 2, LIMIT, MORNING)

    second = mascots.claim_job(ALICE, 1, LIMIT, MORNING + timedelta(seconds=5))

    assert first.claimed and first.claim_id
    assert (second.claimed, second.reason, second.claim_id) == (False, "job_in_flight", None)
    assert "still being made" in second.message
    assert second.quota.in_flight == 2 and second.quota.remaining == LIMIT - 2
    assert mascots.claim_job(BOB, 1, LIMIT, MORNING).claimed  # another browser is not held up
    assert mascots.release_job(ALICE, first.claim_id) is True
    assert mascots.claim_job(ALICE, 1, LIMIT, MORNING + timedelta(seconds=6)).claimed


def test_a_job_that_would_go_over_the_quota_is_refused(mascots: MascotStore) -> None:
    save(mascots, ALICE, count=3, now=MORNING)

    refused = mascots.claim_job(ALICE, 2, 4, MORNING)

    assert (refused.claimed, refused.reason) == (False, "over_quota")
    assert refused.quota == QuotaStatus(used=3, limit=4, in_flight=0, remaining=1, resets_at=MIDNIGHT)
    assert "1 of 4" in refused.message and "00:00 UTC" in refused.message
    assert mascots.claim_job(ALICE, 1, 4, MORNING).claimed


def test_a_job_bigger_than_the_whole_quota_is_refused(mascots: MascotStore) -> None:
    refused = mascots.claim_job(ALICE, 5, 4, MORNING)

    assert (refused.claimed, refused.reason) == (False, "over_quota")
    assert mascots.quota(ALICE, 4, MORNING).in_flight == 0


def test_a_spent_quota_says_when_it_resets(mascots: MascotStore) -> None:
    save(mascots, ALICE, count=2, now=MORNING)

    refused = mascots.claim_job(ALICE, 1, 2, MORNING)

    assert refused.reason == "over_quota"
    assert (
        refused.message
        == "You have made your 2 mascots for today. The quota resets in 15 h 0 min (00:00 UTC on 2025-03-15)."
    )


def test_failed_or_cancelled_jobs_do_not_count(mascots: MascotStore) -> None:
    claim = mascots.claim_job(ALICE, 4, LIMIT, MORNING)
    assert mascots.quota(ALICE, LIMIT, MORNING).remaining == LIMIT - 4  # held while in flight

    mascots.release_job(ALICE, claim.claim_id)  # the job failed or was cancelled: nothing saved

    assert mascots.quota(ALICE, LIMIT, MORNING) == QuotaStatus(
        used=0, limit=LIMIT, in_flight=0, remaining=LIMIT, resets_at=MIDNIGHT
    )


def test_saved_images_count_and_release_frees_the_slot(mascots: MascotStore) -> None:
    claim = mascots.claim_job(ALICE, 3, LIMIT, MORNING)
    save(mascots, ALICE, count=3, now=MORNING + timedelta(minutes=1))
    mascots.release_job(ALICE, claim.claim_id)

    after = mascots.quota(ALICE, LIMIT, MORNING + timedelta(minutes=2))

    assert (after.used, after.in_flight, after.remaining) == (3, 0, 7)


def test_deleting_a_mascot_does_not_hand_its_quota_back(mascots: MascotStore) -> None:
    saved = save(mascots, ALICE, count=2, now=MORNING)

    assert mascots.delete_mascot(ALICE, saved.public_ids[0])

    assert mascots.quota(ALICE, LIMIT, MORNING).used == 2


def test_a_stale_claim_may_be_taken_over_so_a_crash_never_locks_a_browser_out(mascots: MascotStore) -> None:
    crashed = mascots.claim_job(ALICE, 2, LIMIT, MORNING)

    still_fresh = mascots.claim_job(ALICE, 1, LIMIT, MORNING + JOB_STALE_AFTER - timedelta(seconds=1))
    taken_over = mascots.claim_job(ALICE, 1, LIMIT, MORNING + JOB_STALE_AFTER + timedelta(seconds=1))

    assert still_fresh.reason == "job_in_flight"
    assert taken_over.claimed and taken_over.claim_id != crashed.claim_id
    assert taken_over.quota.in_flight == 1
    assert mascots.quota(ALICE, LIMIT, MORNING + JOB_STALE_AFTER + timedelta(seconds=2)).in_flight == 1


def test_a_refreshed_claim_stays_alive_however_long_the_job_waits(mascots: MascotStore) -> None:
    claim = mascots.claim_job(ALICE, 1, LIMIT, MORNING)
    other = mascots.claim_job(BOB, 1, LIMIT, MORNING)
    for minute in range(1, 40):  # a long queue, refreshed as the running app does
        assert mascots.refresh_job_claims([claim.claim_id], MORNING + timedelta(minutes=minute)) == 1
    late = MORNING + timedelta(minutes=40)
    assert mascots.claim_job(ALICE, 1, LIMIT, late).reason == "job_in_flight"
    assert mascots.claim_job(BOB, 1, LIMIT, late).claimed  # Bob's claim was not refreshed: its process is gone
    assert other.claim_id is not None
    assert mascots.refresh_job_claims([], late) == 0
    assert mascots.refresh_job_claims(["not-a-claim"], late) == 0


def test_a_crashed_jobs_claim_frees_the_browser_within_minutes(mascots: MascotStore) -> None:
    mascots.claim_job(ALICE, 1, LIMIT, MORNING)
    assert timedelta(minutes=5) >= JOB_STALE_AFTER
    assert mascots.claim_job(ALICE, 1, LIMIT, MORNING + JOB_STALE_AFTER + timedelta(seconds=1)).claimed


def test_a_stale_claim_holds_no_quota(mascots: MascotStore) -> None:
    mascots.claim_job(ALICE, 4, LIMIT, MORNING)

    assert mascots.quota(ALICE, LIMIT, MORNING + JOB_STALE_AFTER + timedelta(seconds=1)).remaining == LIMIT


def test_releasing_an_old_claim_leaves_the_claim_that_took_over_alone(mascots: MascotStore) -> None:
    old = mascots.claim_job(ALICE, 1, LIMIT, MORNING)
    later = MORNING + JOB_STALE_AFTER + timedelta(minutes=1)
    new = mascots.claim_job(ALICE, 1, LIMIT, later)

    assert mascots.release_job(ALICE, old.claim_id) is False  # the crashed job came back after all

    assert mascots.claim_job(ALICE, 1, LIMIT, later).reason == "job_in_flight"
    assert mascots.release_job(ALICE, new.claim_id) is True
    assert mascots.release_job(ALICE) is False  # nothing left to release


def test_the_job_slot_and_the_quota_hold_across_replicas(open_store: OpenStore) -> None:
    replica_one, replica_two = open_store(), open_store()
    save(replica_one, ALICE, count=3, now=MORNING)

    assert replica_one.claim_job(ALICE, 1, LIMIT, MORNING).claimed
    assert replica_two.claim_job(ALICE, 1, LIMIT, MORNING).reason == "job_in_flight"
    assert replica_two.quota(ALICE, LIMIT, MORNING).used == 3
    assert replica_two.release_job(ALICE) is True
    assert replica_one.claim_job(ALICE, 8, LIMIT, MORNING).reason == "over_quota"  # 3 + 8 > 10


def test_simultaneous_claims_grant_exactly_one(mascots: MascotStore) -> None:
    results: list[ClaimResult] = []
    errors: list[Exception] = []
    start = threading.Barrier(6)

    def claim() -> None:
        try:
            start.wait()
            results.append(mascots.claim_job(ALICE, 1, LIMIT, MORNING))
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)
        finally:
            mascots.close()

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(result.reason for result in results) == ["claimed", *["job_in_flight"] * 5]


def test_quota_arguments_are_checked(mascots: MascotStore) -> None:
    with pytest.raises(ValueError, match="images"):
        mascots.claim_job(ALICE, 0, LIMIT, MORNING)
    with pytest.raises(ValueError, match="limit"):
        mascots.claim_job(ALICE, 1, -1, MORNING)
    with pytest.raises(ValueError, match="limit"):
        mascots.quota(ALICE, True, MORNING)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.claim_job("not a hash", 1, LIMIT, MORNING)
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.release_job("not a hash")
