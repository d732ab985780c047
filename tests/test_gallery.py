"""History entries, the gallery, share links, privacy, deleting and likes, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from mascot.store.likes import LikeBook
from mascot.store.store import PUBLIC_ID_PATTERN, LikeState, MascotStore
from mascot.web.clients import AddressKeys
from tests.support.store import make_request, owner, save

NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
ALICE, BOB, CAROL = owner("alice"), owner("bob"), owner("carol")


def at(minutes: int) -> datetime:
    return NOON + timedelta(minutes=minutes)


def gallery_ids(mascots: MascotStore, viewer: str | None = None, **paging: object) -> list[str]:
    return [entry.public_id for entry in mascots.gallery(viewer, **paging).items]  # type: ignore[arg-type]


def like_rows(mascots: MascotStore) -> int:
    return mascots.tables.like.select().count()


def test_history_entries_carry_share_ids_thumbnails_and_every_parameter(mascots: MascotStore) -> None:
    saved = save(mascots, ALICE, "an otter barista", seed=30, count=2)
    request = make_request("an otter barista", seed=30, count=2)

    first, second = mascots.history(ALICE)

    assert (first.public_id, second.public_id) == saved.public_ids
    assert all(PUBLIC_ID_PATTERN.fullmatch(public_id) for public_id in saved.public_ids)
    assert first.public_id != second.public_id
    assert (first.thumbnail_path, second.thumbnail_path) == saved.thumbnail_paths
    assert (first.is_public, first.like_count, first.liked_by_viewer, first.is_owner) == (True, 0, False, True)
    assert (second.position, second.seed, second.request.num_images_per_prompt) == (1, 31, 2)
    assert (first.request.num_inference_steps, first.request.guidance_scale) == (2, 5.5)
    assert (first.request.prior_num_inference_steps, first.request.prior_guidance_scale) == (3, 1.5)
    assert (first.model_name, first.prompt_cut) == ("tiny preview model", "")
    assert second.remix_request().as_dict() == {**request.as_dict(), "seed": 31, "num_images_per_prompt": 1}


def test_history_page_has_the_total_and_knows_when_there_is_more(mascots: MascotStore) -> None:
    save(mascots, ALICE, count=3)

    first, last = mascots.history_page(ALICE, per_page=2), mascots.history_page(ALICE, page=2, per_page=2)

    assert (len(first.items), first.total, first.has_next) == (2, 3, True)
    assert (len(last.items), last.total, last.has_next) == (1, 3, False)


def test_the_gallery_shows_everyones_public_mascots_newest_first_with_captions(mascots: MascotStore) -> None:
    older = save(mascots, ALICE, "alice's otter", now=at(0))
    newer = save(mascots, BOB, "bob's fox " + "with a very long scarf " * 5, now=at(1))

    page = mascots.gallery(CAROL)

    assert [entry.public_id for entry in page.items] == [*newer.public_ids, *older.public_ids]
    assert page.items[1].caption == "alice's otter"
    assert page.items[0].caption.startswith("bob's fox") and page.items[0].caption.endswith("…")
    assert (page.total, page.has_next) == (2, False)
    assert not any(entry.is_owner for entry in page.items)
    assert [entry.is_owner for entry in mascots.gallery(ALICE).items] == [False, True]


def test_the_top_view_sorts_by_likes_and_breaks_ties_newest_first(mascots: MascotStore) -> None:
    [one_like] = save(mascots, ALICE, "one like", now=at(0)).public_ids
    [two_likes] = save(mascots, ALICE, "two likes", now=at(1)).public_ids
    [tie_older] = save(mascots, BOB, "no likes, older", now=at(2)).public_ids
    [tie_newer] = save(mascots, BOB, "no likes, newer", now=at(3)).public_ids
    mascots.toggle_like(BOB, two_likes)
    mascots.toggle_like(CAROL, two_likes)
    mascots.toggle_like(CAROL, one_like)

    assert gallery_ids(mascots, sort="top") == [two_likes, one_like, tie_newer, tie_older]
    assert gallery_ids(mascots, sort="newest") == [tie_newer, tie_older, two_likes, one_like]
    assert [entry.like_count for entry in mascots.gallery(None, sort="top").items] == [2, 1, 0, 0]


def test_gallery_pages_cover_every_public_mascot_once(mascots: MascotStore) -> None:
    for minute in range(5):
        save(mascots, ALICE, f"mascot {minute}", now=at(minute))
    save(mascots, ALICE, "private", now=at(9), is_public=False)

    pages = [mascots.gallery(None, page=number, per_page=2) for number in (1, 2, 3, 4)]

    assert [[entry.request.prompt for entry in page.items] for page in pages] == [
        ["mascot 4", "mascot 3"],
        ["mascot 2", "mascot 1"],
        ["mascot 0"],
        [],
    ]
    assert [page.has_next for page in pages] == [True, True, False, False]
    assert {page.total for page in pages} == {5}
    assert mascots.count_gallery() == 5


def test_a_full_last_page_has_no_next(mascots: MascotStore) -> None:
    for minute in range(4):
        save(mascots, ALICE, now=at(minute))

    assert [mascots.gallery(None, page=n, per_page=2).has_next for n in (1, 2)] == [True, False]
    assert [mascots.history_page(ALICE, page=n, per_page=2).has_next for n in (1, 2)] == [True, False]


def test_gallery_arguments_out_of_range_are_refused(mascots: MascotStore) -> None:
    with pytest.raises(ValueError, match="sort"):
        mascots.gallery(None, sort="oldest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="page"):
        mascots.gallery(None, page=0)
    with pytest.raises(ValueError, match="per_page"):
        mascots.gallery(None, per_page=1000)
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.gallery("not a hash")
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.mascot("A" * 12, "not a hash")


def test_private_mascots_are_seen_by_their_owner_only(mascots: MascotStore) -> None:
    [hidden] = save(mascots, ALICE, "alice's secret", now=at(0)).public_ids
    [shown] = save(mascots, ALICE, "alice's public one", now=at(1)).public_ids
    [bobs] = save(mascots, BOB, "bob's own", now=at(2)).public_ids  # a browser the store knows, not just a stranger

    assert mascots.set_public(ALICE, hidden, False) is True

    assert gallery_ids(mascots, None) == gallery_ids(mascots, BOB) == gallery_ids(mascots, ALICE) == [bobs, shown]
    assert mascots.gallery(BOB).total == 2
    assert mascots.mascot(hidden, BOB) is None
    assert mascots.mascot(hidden, owner("stranger")) is None
    assert mascots.mascot(hidden, None) is None
    own = mascots.mascot(hidden, ALICE)
    assert own is not None and (own.is_public, own.is_owner, own.request.prompt) == (False, True, "alice's secret")
    assert [entry.is_public for entry in mascots.history(ALICE)] == [True, False]
    assert [entry.public_id for entry in mascots.history(BOB)] == [bobs]


def test_a_private_mascot_made_public_again_returns_to_the_gallery(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE, is_public=False).public_ids
    assert gallery_ids(mascots) == []

    assert mascots.set_public(ALICE, public_id, True) is True

    assert gallery_ids(mascots) == [public_id]
    assert mascots.mascot(public_id, BOB) is not None


def test_only_the_owner_can_change_who_sees_a_mascot(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    assert mascots.set_public(BOB, public_id, False) is False
    assert mascots.set_public(owner("never seen"), public_id, False) is False

    assert gallery_ids(mascots) == [public_id]


def test_a_share_link_opens_a_public_mascot_for_a_first_time_visitor(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE, "shared otter", seed=99).public_ids

    for viewer in (None, owner("first visit")):
        entry = mascots.mascot(public_id, viewer)
        assert entry is not None
        assert (entry.request.prompt, entry.seed, entry.is_owner, entry.liked_by_viewer) == (
            "shared otter",
            99,
            False,
            False,
        )
        assert entry.path.is_file() and entry.thumbnail_path is not None and entry.thumbnail_path.is_file()
    assert mascots.tables.browser.select().count() == 1  # looking creates no browser row


@pytest.mark.parametrize("bad_id", ["A" * 12, "", "short", "../../etc/pa", "1", "x" * 13, "abc def ghij"])
def test_an_unknown_or_malformed_share_id_finds_nothing_and_changes_nothing(mascots: MascotStore, bad_id: str) -> None:
    save(mascots, ALICE)

    assert mascots.mascot(bad_id, ALICE) is None
    assert mascots.set_public(ALICE, bad_id, False) is False
    assert mascots.delete_mascot(ALICE, bad_id) is False
    assert mascots.toggle_like(ALICE, bad_id) is None
    assert mascots.count_history(ALICE) == mascots.count_gallery() == 1


def test_a_non_owner_cannot_delete_a_mascot(mascots: MascotStore) -> None:
    saved = save(mascots, ALICE)
    [public_id] = saved.public_ids

    assert mascots.delete_mascot(BOB, public_id) is False

    assert gallery_ids(mascots) == [public_id]
    assert saved.image_paths[0].is_file() and saved.thumbnail_paths[0].is_file()
    assert mascots.count_history(ALICE) == 1


def test_deleting_removes_the_row_its_likes_its_files_and_its_gallery_entry(mascots: MascotStore) -> None:
    saved = save(mascots, ALICE, count=2)
    gone, kept = saved.public_ids
    mascots.toggle_like(BOB, gone)
    mascots.toggle_like(BOB, kept)

    assert mascots.delete_mascot(ALICE, gone) is True

    assert not saved.image_paths[0].exists() and not saved.thumbnail_paths[0].exists()
    assert saved.image_paths[1].is_file() and saved.thumbnail_paths[1].is_file()
    assert gallery_ids(mascots) == [kept]
    assert [entry.public_id for entry in mascots.history(ALICE)] == [kept]
    assert mascots.mascot(gone, ALICE) is None
    assert like_rows(mascots) == 1
    assert mascots.tables.generation.select().count() == 1  # one image left in it
    assert mascots.delete_mascot(ALICE, gone) is False


def test_deleting_the_last_image_of_a_generation_deletes_the_generation(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    save(mascots, BOB)

    assert mascots.delete_mascot(ALICE, public_id) is True

    assert mascots.tables.generation.select().count() == 1
    assert mascots.count_history(ALICE) == 0


def test_a_like_counts_once_per_browser_and_toggles(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    assert mascots.toggle_like(BOB, public_id) == LikeState(liked=True, like_count=1)
    assert mascots.toggle_like(CAROL, public_id) == LikeState(liked=True, like_count=2)
    assert mascots.toggle_like(BOB, public_id) == LikeState(liked=False, like_count=1)
    assert mascots.toggle_like(BOB, public_id) == LikeState(liked=True, like_count=2)

    assert like_rows(mascots) == 2
    assert [(entry.like_count, entry.liked_by_viewer) for entry in mascots.gallery(BOB).items] == [(2, True)]
    assert [(entry.like_count, entry.liked_by_viewer) for entry in mascots.gallery(ALICE).items] == [(2, False)]
    assert [(entry.like_count, entry.liked_by_viewer) for entry in mascots.gallery(None).items] == [(2, False)]
    assert mascots.mascot(public_id, CAROL).liked_by_viewer is True  # type: ignore[union-attr]


def test_liking_another_browsers_private_mascot_is_refused(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE, is_public=False).public_ids

    assert mascots.toggle_like(BOB, public_id) is None

    assert like_rows(mascots) == 0
    assert mascots.toggle_like(ALICE, public_id) == LikeState(liked=True, like_count=1)  # the owner may
    assert mascots.history(ALICE)[0].liked_by_viewer is True


def test_a_first_time_visitor_can_like_and_gets_a_browser_row(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    visitor = owner("first visit")

    assert mascots.toggle_like(visitor, public_id) == LikeState(liked=True, like_count=1)

    browser = mascots.tables.browser
    assert browser.select().where(browser.owner_hash == visitor).count() == 1
    assert mascots.gallery(visitor).items[0].liked_by_viewer is True


def test_like_counts_stay_exact_when_many_browsers_like_at_once(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    likers = [owner(f"liker {n}") for n in range(8)]
    errors: list[Exception] = []

    def like(who: str) -> None:
        try:
            for _ in range(3):  # like, unlike, like
                mascots.toggle_like(who, public_id)
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)
        finally:
            mascots.close()

    threads = [threading.Thread(target=like, args=(who,)) for who in likers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert mascots.gallery(None).items[0].like_count == len(likers) == like_rows(mascots)


def test_a_thumbnail_is_a_small_webp_of_the_image(mascots: MascotStore) -> None:
    saved = save(mascots, ALICE)

    [thumbnail_path] = saved.thumbnail_paths
    assert thumbnail_path.name == saved.image_paths[0].name.replace(".png", ".thumb.webp")
    assert thumbnail_path.parent == saved.image_paths[0].parent
    with Image.open(thumbnail_path) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (256, 205))
        assert thumbnail.convert("RGB").getpixel((10, 10)) == pytest.approx((0, 100, 200), abs=8)


def liked_by(mascots: MascotStore, viewer: str | None, **paging: object) -> list[str]:
    """The prompts under "Liked by me" for `viewer`, in its order."""
    return [entry.request.prompt for entry in mascots.gallery(viewer, sort="liked", **paging).items]  # type: ignore[arg-type]


def test_liked_by_me_lists_only_this_browsers_likes_most_recently_liked_first(mascots: MascotStore) -> None:
    [old] = save(mascots, ALICE, "old mascot", now=at(0)).public_ids
    [new] = save(mascots, ALICE, "new mascot", now=at(1)).public_ids
    [bobs_only] = save(mascots, ALICE, "bob likes this", now=at(2)).public_ids
    mascots.toggle_like(CAROL, new, now=at(10))
    mascots.toggle_like(CAROL, old, now=at(11))  # liked later: listed first, though made earlier
    mascots.toggle_like(BOB, bobs_only, now=at(12))

    page = mascots.gallery(CAROL, sort="liked")

    assert [entry.request.prompt for entry in page.items] == ["old mascot", "new mascot"]
    assert all(entry.liked_by_viewer and not entry.is_owner for entry in page.items)
    assert (page.total, page.has_next) == (2, False) and mascots.count_gallery(liked_by=CAROL) == 2
    assert liked_by(mascots, BOB) == ["bob likes this"]
    assert liked_by(mascots, ALICE) == [] and mascots.count_gallery(liked_by=ALICE) == 0


def test_liked_by_me_leaves_out_private_and_hidden_mascots_and_unliked_ones(mascots: MascotStore) -> None:
    [kept] = save(mascots, ALICE, "still listed", now=at(0)).public_ids
    [private] = save(mascots, ALICE, "made private", now=at(1)).public_ids
    [taken_down] = save(mascots, ALICE, "taken down", now=at(2)).public_ids
    [unliked] = save(mascots, ALICE, "unliked", now=at(3)).public_ids
    for public_id in (kept, private, taken_down, unliked):
        mascots.toggle_like(BOB, public_id)
    assert liked_by(mascots, BOB) == ["unliked", "taken down", "made private", "still listed"]

    assert mascots.set_public(ALICE, private, False)
    assert mascots.hide_mascot(taken_down)
    assert mascots.toggle_like(BOB, unliked) == LikeState(liked=False, like_count=0)

    assert liked_by(mascots, BOB) == ["still listed"]
    assert mascots.gallery(BOB, sort="liked").total == mascots.count_gallery(liked_by=BOB) == 1
    # The owner's own like of a mascot they made private is not listed either: the list is of the gallery.
    mascots.toggle_like(ALICE, private)
    assert liked_by(mascots, ALICE) == []


def test_liked_by_me_pages_and_searches_like_the_other_sorts(mascots: MascotStore) -> None:
    for minute in range(5):
        [public_id] = save(mascots, ALICE, f"{'otter' if minute % 2 else 'fox'} {minute}", now=at(minute)).public_ids
        mascots.toggle_like(BOB, public_id, now=at(20 - minute))  # liked in the opposite order to the making
    save(mascots, ALICE, "an otter nobody liked", now=at(9))

    pages = [mascots.gallery(BOB, sort="liked", page=number, per_page=2) for number in (1, 2, 3)]

    assert [[entry.request.prompt for entry in page.items] for page in pages] == [
        ["fox 0", "otter 1"],
        ["fox 2", "otter 3"],
        ["fox 4"],
    ]
    assert [(page.total, page.has_next) for page in pages] == [(5, True), (5, True), (5, False)]
    assert liked_by(mascots, BOB, search="OTTER") == ["otter 1", "otter 3"]
    assert mascots.gallery(BOB, sort="liked", search="otter").total == 2
    assert mascots.count_gallery(search="otter", liked_by=BOB) == 2
    assert mascots.count_gallery(search="otter") == 3  # the whole gallery's count is unchanged
    assert liked_by(mascots, BOB, search="unicorn") == []


def test_liked_by_me_for_an_unknown_browser_is_empty_and_creates_no_row(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    mascots.toggle_like(BOB, public_id)
    rows = mascots.tables.browser.select().count()

    for viewer in (None, owner("first visit")):
        page = mascots.gallery(viewer, sort="liked", search="otter")
        assert (page.items, page.total, page.has_next) == ((), 0, False)
    assert mascots.count_gallery(liked_by=owner("first visit")) == 0

    assert mascots.tables.browser.select().count() == rows
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.count_gallery(liked_by="not a hash")


# ---- fair likes: a few per network ------------------------------------------------------------------------------
KEYS = AddressKeys(b"s" * 40)
HOME, OFFICE = KEYS.address_hash("203.0.113.7"), KEYS.address_hash("2001:db8::1")


def like_from(mascots: MascotStore, who: str, public_id: str, network: str | None, **kwargs: object) -> LikeState:
    state = mascots.toggle_like(who, public_id, address_hash=network, **kwargs)  # type: ignore[arg-type]
    assert state is not None
    return state


def test_five_browsers_on_one_network_count_three_likes_and_another_network_adds_one(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    cookies = [owner(f"cleared cookie {n}") for n in range(5)]

    counts = [like_from(mascots, who, public_id, HOME).like_count for who in cookies]
    from_office = like_from(mascots, BOB, public_id, OFFICE)

    assert counts == [1, 2, 3, 3, 3]
    assert from_office == LikeState(liked=True, like_count=4)
    assert like_rows(mascots) == 6  # every browser's like is kept, and shown to it as its own
    assert all(mascots.mascot(public_id, who).liked_by_viewer for who in cookies)  # type: ignore[union-attr]
    assert mascots.gallery(None).items[0].like_count == 4


def test_unliking_a_counted_like_lets_one_over_the_cap_count(mascots: MascotStore) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    first, *others = [owner(f"home {n}") for n in range(4)]
    for who in (first, *others):
        like_from(mascots, who, public_id, HOME)

    assert like_from(mascots, first, public_id, HOME) == LikeState(liked=False, like_count=3)  # the 4th now counts
    assert like_from(mascots, others[0], public_id, HOME) == LikeState(liked=False, like_count=2)
    assert like_from(mascots, first, public_id, HOME) == LikeState(liked=True, like_count=3)


def test_a_cap_of_zero_counts_every_like_and_likes_without_an_address_count_each(mascots: MascotStore) -> None:
    [uncapped, unknown] = save(mascots, ALICE, count=2).public_ids

    counts = [like_from(mascots, owner(f"u{n}"), uncapped, HOME, likes_per_network=0).like_count for n in range(5)]
    local = [like_from(mascots, owner(f"local {n}"), unknown, None).like_count for n in range(5)]

    assert counts == [1, 2, 3, 4, 5]
    assert local == [1, 2, 3, 4, 5]  # no address: cannot be told apart, so each counts as before


def test_most_liked_follows_the_fair_count(mascots: MascotStore) -> None:
    [one_persons_cookies] = save(mascots, ALICE, "many cookies, one network", now=at(0)).public_ids
    [four_networks] = save(mascots, ALICE, "liked from four networks", now=at(1)).public_ids
    for n in range(10):
        like_from(mascots, owner(f"cookie {n}"), one_persons_cookies, HOME)
    for n in range(4):
        like_from(mascots, owner(f"neighbour {n}"), four_networks, KEYS.address_hash(f"198.51.100.{n}"))

    assert gallery_ids(mascots, sort="top") == [four_networks, one_persons_cookies]
    assert [entry.like_count for entry in mascots.gallery(None, sort="top").items] == [4, 3]


def test_likes_at_once_from_one_network_count_up_to_the_cap_and_miss_none(
    mascots: MascotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst timing: every like is written before any counts. Without the row lock (PostgreSQL; SQLite's write
    transactions take turns) each would count only itself and the ones committed before, and the last to write wins."""
    [public_id] = save(mascots, ALICE).public_ids
    likers = [owner(f"racing cookie {n}") for n in range(5)]
    all_written = threading.Barrier(len(likers))
    fair_count = LikeBook.fair_count

    def count_when_all_are_written(book: LikeBook, image_id: int, likes_per_network: int) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):  # the others wait for this one: go on
            all_written.wait(timeout=2)
        return fair_count(book, image_id, likes_per_network)

    monkeypatch.setattr(LikeBook, "fair_count", count_when_all_are_written)
    errors: list[Exception] = []

    def like(who: str, network: str | None) -> None:
        try:
            assert like_from(mascots, who, public_id, network).liked
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)
        finally:
            mascots.close()

    threads = [threading.Thread(target=like, args=(who, HOME)) for who in likers[:4]]
    threads.append(threading.Thread(target=like, args=(likers[4], OFFICE)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert like_rows(mascots) == 5
    assert mascots.gallery(None).items[0].like_count == 4  # three from HOME, one from OFFICE


# ---- top this week ---------------------------------------------------------------------------------------------
def test_top_this_week_counts_the_last_seven_days_likes_and_breaks_ties_newest_first(mascots: MascotStore) -> None:
    [famous_once] = save(mascots, ALICE, "liked a month ago", now=at(0)).public_ids
    [rising] = save(mascots, ALICE, "liked this week", now=at(1)).public_ids
    [quiet_older] = save(mascots, BOB, "no likes, older", now=at(2)).public_ids
    [quiet_newer] = save(mascots, BOB, "no likes, newer", now=at(3)).public_ids
    week_end = NOON + timedelta(days=30)
    for n in range(3):
        like_from(mascots, owner(f"fan {n}"), famous_once, None, now=NOON + timedelta(days=1))
    like_from(mascots, owner("early"), rising, None, now=week_end - timedelta(days=7))  # the window's first moment
    like_from(mascots, owner("late"), rising, None, now=week_end - timedelta(minutes=1))
    like_from(mascots, owner("just too old"), quiet_older, None, now=week_end - timedelta(days=7, seconds=1))

    assert gallery_ids(mascots, sort="week", now=week_end) == [rising, quiet_newer, quiet_older, famous_once]
    assert gallery_ids(mascots, sort="top") == [famous_once, rising, quiet_older, quiet_newer]
    searched = mascots.gallery(None, sort="week", now=week_end, search="liked", per_page=1)
    assert ([entry.public_id for entry in searched.items], searched.total) == ([rising], 2)


def test_top_this_week_takes_a_few_likes_per_network_as_most_liked_does(mascots: MascotStore) -> None:
    [one_persons_cookies] = save(mascots, ALICE, "many cookies, one network", now=at(0)).public_ids
    [four_networks] = save(mascots, ALICE, "liked from four networks", now=at(1)).public_ids
    for n in range(10):
        like_from(mascots, owner(f"cookie {n}"), one_persons_cookies, HOME, now=at(10))
    for n in range(4):
        like_from(mascots, owner(f"neighbour {n}"), four_networks, KEYS.address_hash(f"198.51.100.{n}"), now=at(10))

    assert gallery_ids(mascots, sort="week", now=at(20)) == [four_networks, one_persons_cookies]
    uncapped = gallery_ids(mascots, sort="week", now=at(20), likes_per_network=0)
    assert uncapped == [one_persons_cookies, four_networks]
