"""MascotService: what a person can do, for every entry point (the page, its API, tests). It decides and refuses
(Refusal); it never imports gradio, so it is tested directly with a fake generator and a temporary store."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from PIL import Image

from mascot.clock import Clock, utc_now
from mascot.generation.worker import GenerationWorker, Job, Submission, SubmitRefused
from mascot.prompt.logos import LogoGrants, LogoLibrary, LogoRefused, stored_logo_id
from mascot.prompt.pictures import read_png_text
from mascot.prompt.presets import Presets
from mascot.prompt.recipe import recipe_from_png_text
from mascot.prompt.request import BASED_ON_PREFIX, GenerationRequest, InvalidRequest, Problem, based_on_mascot
from mascot.prompt.wordfilter import BlockedWords
from mascot.service import sentences
from mascot.service.answers import Notice, Refusal, Visitor
from mascot.service.claims import CutOffJobs
from mascot.service.downloads import DownloadFolder
from mascot.service.limits import KeyedLimit, Limiters, seconds_phrase
from mascot.service.starting_pictures import StartingPictures
from mascot.settings import Rules
from mascot.store.device_links import is_code
from mascot.store.export import NothingToExport, Progress, export_fingerprint, export_mascots
from mascot.store.imaging import read_parameters, save_png, transparent_sticker
from mascot.store.likes import LikeState
from mascot.store.moderation import NO_REASON, check_reason
from mascot.store.quota import QuotaStatus, over_address_quota_message, over_quota_message
from mascot.store.store import MascotEntry, MascotStore, StoreUnavailable, TooManyLinks
from mascot.web.clients import AddressKeys, ClientNetwork
from mascot.web.page_url import device_url, mascot_url

PARAMETERS = tuple(field.name for field in dataclasses.fields(GenerationRequest))
# Where the model is slow (the preview model, or any model on a CPU) the page starts at settings that finish in
# seconds; the prior's scheduler needs at least 2 steps.
QUICK_SETTINGS = {"width": 512, "height": 512, "num_inference_steps": 10, "prior_num_inference_steps": 5}
# A picture dropped to remix: ours are a few hundred kB; anything far larger is not one worth reading (its pixels
# never are: only its text chunks, prompt.pictures.read_png_text).
MAX_RECIPE_FILE_BYTES = 20 * 1024 * 1024
VARIATION_WEIGHT = 0.5  # "More like this": half the mascot's own look, close to it but visibly new
VARIATIONS = 2  # "More like this": a couple of tries


@dataclass(frozen=True)
class Remix:
    """A mascot's parameters to put back into the form (`values`, by GenerationRequest field), the picture to show
    as its logo, and whether a new seed should be drawn each time."""

    values: dict[str, Any]
    logo_path: Path | None
    randomize_seed: bool
    based_on_idea: str | None = None  # the idea of the mascot `values["logo"]` starts from ("mascot:<share id>")
    notice: Notice | None = None  # what was left out, and why


@dataclass(frozen=True)
class PictureRecipe:
    """Form values read from a dropped picture (by GenerationRequest field) and what to tell the person: where they
    came from, and which settings were left out."""

    values: dict[str, Any]
    note: str


@dataclass(frozen=True)
class Download:
    """A file made for a person to download, and a warning to show with it, if any."""

    path: Path
    warning: Notice | None = None


@dataclass(frozen=True)
class DeviceQuestion:
    """What a page opened with a device link asks before anything changes: the text, and the two ways to open it
    (None: not offered). Moving is offered only when this browser has mascots of its own to move."""

    text: str
    join: str | None = None  # keeps this browser's own mascots apart
    join_moving: str | None = None  # moves them to the link's device, after the person confirms


@dataclass(frozen=True)
class DevicesAnswer:
    """After a change of linked devices: what to say (None: nothing) and the line counting the other devices."""

    notice: Notice | None
    others: str


P = ParamSpec("P")
R = TypeVar("R")
# Pages that may follow one browser's mascot besides the click that started it: a reload and a second tab.
FOLLOWERS_PER_JOB = 2


def refuses_when_store_unavailable(action: Callable[P, R]) -> Callable[P, R]:
    """An action that touches the store: when the disk is full, the database read-only, locked, busy or out of
    reach, the store's sentence (store.faults, store.connections) is its refusal, and nothing changed."""

    @functools.wraps(action)
    def acting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return action(*args, **kwargs)
        except StoreUnavailable as error:
            raise Refusal(str(error)) from None

    return acting


def _png_text(upload: Path) -> dict[str, Any]:
    """A PNG's text chunks, refused with a sentence when the file is not a PNG (or too large a file, or its compressed
    text would inflate past PIL's caps: a text bomb). No pixel is decoded (prompt.pictures.read_png_text)."""
    try:
        if upload.stat().st_size > MAX_RECIPE_FILE_BYTES:
            raise Refusal(sentences.NOT_A_RECIPE_PICTURE)
        return read_png_text(upload)
    except (OSError, ValueError):  # NotAPicture is a ValueError, as are PIL's text caps
        raise Refusal(sentences.NOT_A_RECIPE_PICTURE) from None


def _write_sticker(image_path: Path, destination: Path) -> None:
    """The picture at `image_path` cut out of its background, with its parameters, as a PNG at `destination`."""
    with Image.open(image_path) as picture:
        cut_out = transparent_sticker(picture)
    save_png(cut_out, destination, read_parameters(image_path))


def _too_often(limit: KeyedLimit, what: str, wait_s: float) -> Refusal:
    """The refusal of work asked for more often than its limit allows."""
    return Refusal(sentences.too_often_line(what, limit.limit.per_window, limit.limit.window_s, seconds_phrase(wait_s)))


class MascotService:
    """Built once (app.py) from the store, the worker and the house rules; every method takes the Visitor asking."""

    def __init__(
        self,
        *,
        store: MascotStore,
        worker: GenerationWorker,
        rules: Rules,
        address_keys: AddressKeys,
        downloads: DownloadFolder,
        presets: Presets | None = None,
        logos: LogoLibrary | None = None,  # None: no logo mixing
        logo_secret: bytes | None = None,  # signs logo grants; replicas share it (the app's secret). None: a new one
        blocked_words: BlockedWords | None = None,  # None: nothing blocked
        clock: Clock = utc_now,  # tests move it across a day boundary
        prepare: Callable[[GenerationRequest], GenerationRequest] | None = None,  # the worker's; None: the presets
        limiters: Limiters | None = None,  # None: the house limits (service.limits)
        cut_off: CutOffJobs | None = None,  # the ClaimKeeper's: the browsers whose job a killed run took down
    ) -> None:
        self.store = store
        self.worker = worker
        self.rules = rules
        self.presets = presets or Presets({}, {})
        self.logos = logos
        brand_logos = [brand.logo for brand in self.presets.brands.values() if brand.logo]
        self.logo_grants = LogoGrants(logo_secret or secrets.token_bytes(32), brand_logos)
        self.pictures = StartingPictures(store, logos) if logos is not None else None
        self.clock = clock
        self._address_keys = address_keys
        self.downloads = downloads
        self._blocked_words = blocked_words or BlockedWords()
        self._prepare = prepare or self.presets.apply
        self.limiters = limiters or Limiters()
        self.cut_off = cut_off if cut_off is not None else CutOffJobs()  # (an empty one is falsy)
        self._exports: dict[str, tuple[str, Download]] = {}  # owner hash -> (what its last ZIP held, it): reused
        self._exports_lock = threading.Lock()
        self._followers: dict[str, int] = {}  # job id -> pages following it (following_own_job)
        self._followers_lock = threading.Lock()

    # ---- who is asking -----------------------------------------------------------------------------------------
    def owner(self, visitor: Visitor) -> str:
        """The owner hash the visitor's browser stands for: the browser it was linked to (store.device_links), else
        itself. One indexed query, no cache, so replicas agree."""
        return self.store.resolve_owner(visitor.token_hash)

    def network(self, visitor: Visitor) -> ClientNetwork:
        """The visitor's network, worked out once: the queue cap, the quotas, likes and reports all count by it. In one
        office (rules.one_office) everyone shares one address, so each browser counts as a network of its own."""
        if self.rules.one_office:
            return self._address_keys.browser(visitor.token_hash)
        return self._address_keys.network(visitor.address)

    def _count(self, limit: KeyedLimit, what: str, visitor: Visitor | None) -> None:
        """Count one piece of work for the browser and its network, or refuse it (nothing counted) with the wait."""
        if visitor is None:
            raise Refusal(sentences.NO_COOKIE)
        wait = limit.take(visitor.token_hash, self.network(visitor).key)
        if wait:
            raise _too_often(limit, what, wait)

    def _check_rate(self, limit: KeyedLimit, what: str, visitor: Visitor) -> None:
        """Refuse what `_count` would refuse, counting nothing (a validator's check)."""
        wait = limit.wait_s(visitor.token_hash, self.network(visitor).key)
        if wait:
            raise _too_often(limit, what, wait)

    # ---- creating ----------------------------------------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """The request as the model is given it (presets, logo colours): the worker's own `prepare`."""
        return self._prepare(request)

    def request_from(self, values: Mapping[str, Any]) -> GenerationRequest:
        """The request from raw values named as GenerationRequest's fields, checked as every entry point checks it:
        the ranges, the blocked words (the idea only), the presets, the adapter and the logo."""
        try:
            request = GenerationRequest.from_user(**{name: values[name] for name in PARAMETERS if name in values})
            self._blocked_words.check_request(request)
            self.presets.check_request(request)
        except InvalidRequest as error:
            raise Refusal(error.message, error.parameter, error.problems) from None
        self._check_adapter(request)
        if request.logo and self.logos is None:
            raise Refusal(sentences.NO_LOGOS, "logo")
        if request.logo and based_on_mascot(request.logo) is None and self.logos and not self.logos.path(request.logo):
            raise Refusal(sentences.LOGO_GONE, "logo")
        return request

    def may_use_logo(self, logo: str, visitor: Visitor | None) -> bool:
        """Whether the visitor's browser may use `logo`, an uploaded logo's id: its own upload, or a brand's. What
        tells a logo's colours asks first: people's uploads are not public, and a public mascot's parameters show the
        id of its logo."""
        return visitor is not None and self.logo_grants.allows(logo, self.owner(visitor))

    def _check_picture(self, request: GenerationRequest, owner_hash: str) -> None:
        """An uploaded logo must have been uploaded by this browser (or be a brand's); a mascot to start from must be
        one this browser may see (checked again when the job runs)."""
        own_upload = based_on_mascot(request.logo) is None
        if request.logo and own_upload and not self.logo_grants.allows(request.logo, owner_hash):
            raise Refusal(sentences.LOGO_NOT_YOURS, "logo")
        if request.logo and self.pictures is not None:
            try:
                self.pictures.check(request.logo, owner_hash)
            except LogoRefused as error:
                raise Refusal(str(error), "logo") from None

    @refuses_when_store_unavailable
    def admit(self, values: Mapping[str, Any], visitor: Visitor | None) -> GenerationRequest:
        """What costs nothing to refuse, before a job takes a queue slot: the request, then (for a browser with its
        cookie) the daily quotas, the browser's and its network's, and whether the worker would take it now."""
        request = self.request_from(values)
        if visitor is not None:
            owner_hash, network = self.owner(visitor), self.network(visitor)
            self._check_picture(request, owner_hash)
            self._check_quota(owner_hash, network, request.num_images_per_prompt)
            try:
                self.worker.check_can_submit(owner_hash, network.key)
            except SubmitRefused as error:
                raise Refusal(str(error)) from None
        return request

    @refuses_when_store_unavailable
    def submit(self, values: Mapping[str, Any], visitor: Visitor | None) -> Job:
        """Check the request again (admission is advice, this is the gate), claim the browser's one job slot and its
        quotas in the database (so they hold across replicas), then queue it; the claim is released if the worker
        refuses. A browser without its cookie (None) is refused after the request's own checks."""
        request = self.request_from(values)
        if visitor is None:
            raise Refusal(sentences.NO_COOKIE)
        owner_hash, network = self.owner(visitor), self.network(visitor)
        self._check_picture(request, owner_hash)
        claim = self.store.claim_job(
            owner_hash, request.num_images_per_prompt, now=self.clock(), address_hash=network.address_hash
        )
        if not claim.claimed:
            raise Refusal(claim.message)
        try:
            return self.worker.submit(
                Submission(request, owner_hash, claim.claim_id, network.key, network.address_hash)
            )
        except SubmitRefused as error:
            self.store.release_job(owner_hash, claim.claim_id)
            raise Refusal(str(error)) from None

    def run_here(self, job: Job) -> None:
        """On ZeroGPU the handler that submitted `job` runs it, since a GPU exists only inside its @spaces.GPU call
        (GenerationWorker.run_in_handler); elsewhere the worker's thread does, and this returns at once."""
        if self.worker.runs_in_handlers:
            self.worker.run_in_handler(job)

    @contextlib.contextmanager
    def following_own_job(self, visitor: Visitor) -> Iterator[Job | None]:
        """The browser's mascot queued or being made here (or being saved), for a page opened again while it is
        under way to follow; None when it has none, or when FOLLOWERS_PER_JOB pages follow it already: each holds a
        handler thread until the job ends, and a browser opening page after page must not take them all."""
        job = self.worker.active_job(self.owner(visitor))
        if job is not None:
            with self._followers_lock:
                following = self._followers.get(job.id, 0)
                if following >= FOLLOWERS_PER_JOB:
                    job = None
                else:
                    self._followers[job.id] = following + 1
        try:
            yield job
        finally:
            if job is not None:
                with self._followers_lock:
                    left = self._followers.pop(job.id) - 1
                    if left:
                        self._followers[job.id] = left

    def cancel(self, visitor: Visitor) -> bool:
        """Cancel the browser's queued or running generation; False when it has none."""
        return self.worker.cancel_for(self.owner(visitor))

    def quota_line(self, visitor: Visitor) -> str:
        """How many mascots the browser may still make today (fewer when its network's quota is nearly spent), and
        when that resets."""
        now = self.clock()
        status = self.store.quota(self.owner(visitor), now=now)
        return sentences.quota_line(status, self._network_quota(self.network(visitor), now), now)

    def cut_off_notice(self, visitor: Visitor) -> str | None:
        """Once, for a browser whose mascot a killed run of the server was making or had queued: that it was not
        made and cost nothing. None for everyone else, and for that browser afterwards."""
        if not self.cut_off:  # nearly always: no page load pays a query for it
            return None
        return sentences.CUT_OFF_BY_RESTART if self.cut_off.take(self.owner(visitor)) else None

    def adapters(self) -> tuple[str, ...] | None:
        """The loaded model's LoRA adapters; None while it loads."""
        info = self.worker.status.info
        return None if info is None else tuple(info.adapters)

    def quick_settings(self) -> dict[str, int] | None:
        """The settings the page starts at where the model is slow (the preview model, or a CPU), {} where the
        defaults are quick enough, None while the model loads (not known yet)."""
        info = self.worker.status.info
        if info is None:
            return None
        slow = info.is_preview_model or not info.device.startswith("cuda")
        return dict(QUICK_SETTINGS) if slow else {}

    def recipe(self, upload: Path, visitor: Visitor | None) -> PictureRecipe:
        """The parameters a dropped PNG carries (ours, or AUTOMATIC1111's text), as far as this app can use them:
        within its ranges, its presets and its loaded adapters; the rest is named in the note. One image, its seed
        kept, as Remix does. Anything that is not a readable PNG of sensible size is refused with a sentence."""
        self._count(self.limiters.pictures, "picture", visitor)
        found = recipe_from_png_text(_png_text(upload))
        if not found.source:
            raise Refusal(sentences.NO_RECIPE)
        values, left_out = dict(found.values), list(found.left_out)
        self._leave_out_unknown_names(values, left_out)
        if not values.get("prompt"):
            raise Refusal(sentences.NO_RECIPE)
        values["num_images_per_prompt"] = 1  # the seed belongs to one image
        return PictureRecipe(values, sentences.recipe_line(found.source, values, left_out))

    def _leave_out_unknown_names(self, values: dict[str, Any], left_out: list[str]) -> None:
        """Preset and adapter names from another app (or another operator's) that this one does not have."""
        known = {
            "style": set(self.presets.styles),
            "brand": set(self.presets.brands),  # LOGO_COLOURS needs the maker's logo, which the picture lacks
            "adapter_name": set(self.adapters() or ()),
        }
        for name, names in known.items():
            if values.get(name) and values[name] not in names:
                left_out.append(name)
                del values[name]

    def _check_adapter(self, request: GenerationRequest) -> None:
        """An adapter name must be one the loaded model has: refused here, by name, not in the worker."""
        adapters = self.adapters()
        if not request.adapter_name or adapters is None:
            return  # while loading, the worker refuses anyway
        if request.adapter_name not in adapters:
            loaded = ", ".join(adapters) or "none"
            problem = Problem(
                "adapter_name", f"{{name}} {request.adapter_name!r} is not a loaded LoRA adapter (loaded: {loaded})."
            )
            raise Refusal(problem.message, "adapter_name", (problem,))

    def _check_quota(self, owner_hash: str, network: ClientNetwork, images: int) -> None:
        """Refuse what the daily quotas would refuse anyway: the browser's first, then its network's."""
        now = self.clock()
        status = self.store.quota(owner_hash, now=now)
        if images > status.remaining:
            raise Refusal(over_quota_message(status))
        network_status = self._network_quota(network, now)
        if network_status is not None and images > network_status.remaining:
            raise Refusal(over_address_quota_message(network_status))

    def _network_quota(self, network: ClientNetwork, now: datetime) -> QuotaStatus | None:
        """The network's quota today; None when no network is capped or the request named none."""
        if network.address_hash is None or not self.rules.address_daily_quota:
            return None
        return self.store.address_quota(network.address_hash, now=now)

    # ---- one mascot --------------------------------------------------------------------------------------------
    def open(self, public_id: object, visitor: Visitor) -> MascotEntry:
        """One mascot by its share id: a public one for anyone, a private or moderated one for its owner."""
        entry = self.store.mascot(str(public_id or ""), self.owner(visitor))
        if entry is None:
            raise Refusal(sentences.GONE)
        return entry

    def share_link(self, entry: MascotEntry, visitor: Visitor) -> str:
        """The page's address with ?mascot=<id>: opens the mascot for anyone, also a first-time visitor."""
        return mascot_url(visitor.page_url, entry.public_id)

    @refuses_when_store_unavailable
    def like(self, public_id: object, visitor: Visitor) -> tuple[LikeState, MascotEntry]:
        """Like a mascot, or take the like back: one per browser, a few per network counted (the rules)."""
        self._count(self.limiters.likes, "like", visitor)
        viewer, public_id = self.owner(visitor), str(public_id or "")
        # The clock "Top this week" measures its week with.
        state = self.store.toggle_like(
            viewer, public_id, address_hash=self.network(visitor).address_hash, now=self.clock()
        )
        entry = self.store.mascot(public_id, viewer) if state is not None else None
        if state is None or entry is None:
            raise Refusal(sentences.GONE)
        return state, entry

    @refuses_when_store_unavailable
    def set_public(self, public_id: object, is_public: object, visitor: Visitor) -> tuple[Notice, MascotEntry | None]:
        """Show one of the browser's mascots in the public gallery, or hide it; returns the notice and the mascot
        as it now is. `is_public` must be a boolean: the string "false" would be true to Python."""
        if not isinstance(is_public, bool):
            raise Refusal(sentences.must_be_boolean("is_public"), "is_public")
        viewer, public_id = self.owner(visitor), str(public_id or "")
        if not self.store.set_public(viewer, public_id, is_public):
            entry = self.store.mascot(public_id, viewer)
            moderated = entry is not None and entry.is_owner and bool(entry.moderation)
            raise Refusal(sentences.visibility_refused_line(entry.moderation_note if moderated and entry else None))
        notice = Notice(sentences.SHOWN if is_public else sentences.HIDDEN)
        return notice, self.store.mascot(public_id, viewer)

    @refuses_when_store_unavailable
    def delete(self, public_id: object, visitor: Visitor) -> Notice:
        """Delete one of the browser's mascots: its image, its likes, everywhere."""
        owner_hash, public_id = self.owner(visitor), str(public_id or "")
        if not self.store.delete_mascot(owner_hash, public_id):
            raise Refusal(sentences.NOT_YOURS_TO_DELETE)
        self.downloads.forget_sticker(public_id)
        self._forget_exports(owner_hash)  # they hold its picture
        return Notice(sentences.DELETED)

    def _forget_exports(self, owner_hash: str) -> None:
        """The owner hash's ZIPs go, on disk and the one kept to be handed out again."""
        self.downloads.forget_exports(owner_hash)
        with self._exports_lock:
            self._exports.pop(owner_hash, None)

    @refuses_when_store_unavailable
    def report(self, public_id: object, reason: object, visitor: Visitor) -> str:
        """Report someone else's mascot to the operator, once per browser; it leaves the gallery once enough
        networks reported it (the rules). Returns the sentence that answers the report."""
        reason = NO_REASON if reason is None else reason
        try:
            check_reason(reason)  # checked here: a client may send anything
        except ValueError as error:
            raise Refusal(str(error), "reason") from None
        self._count(self.limiters.reports, "report", visitor)
        result = self.store.report_mascot(
            self.owner(visitor),
            str(public_id or ""),
            str(reason),
            address_hash=self.network(visitor).address_hash,
        )
        if result.refused:
            raise Refusal(result.message)
        return result.message

    @refuses_when_store_unavailable
    def admit_sticker(self, visitor: Visitor | None) -> None:
        """Before a sticker takes a queue slot (the event's validator): refused while the browser's last one is being
        made or when it asked for too many lately. Takes a running lease that `sticker` ends."""
        self._admit(self.limiters.stickers, "sticker", sentences.STICKER_RUNNING, visitor)

    def sticker(self, public_id: object, visitor: Visitor) -> MascotEntry:
        """The mascot cut out of its background as a transparent PNG with its parameters (best on plain
        backgrounds, like stickers), kept for download by the sticker route (mascot.web.images), which checks on
        every request that the asking browser may still see the mascot. Counted per browser and network
        (service.limits); returns the mascot."""
        try:
            entry = self.open(public_id, visitor)
            self._count(self.limiters.stickers, "sticker", visitor)
            if not self.downloads.keep_sticker(entry.public_id):  # made already: the same pixels
                self.downloads.write_sticker(entry.public_id, functools.partial(_write_sticker, entry.path))
            return entry
        finally:
            self.limiters.stickers.finish(visitor.token_hash, self.network(visitor).key)

    def _admit(self, limit: KeyedLimit, what: str, running: str, visitor: Visitor | None) -> None:
        """A validator's check of work limited per browser: the rate (nothing counted), then the running lease."""
        if visitor is None:
            raise Refusal(sentences.NO_COOKIE)
        self._check_rate(limit, what, visitor)
        full = limit.start(visitor.token_hash, self.network(visitor).key)
        if full is not None:
            raise Refusal(running if full == "browser" else sentences.TOO_MANY_AT_ONCE_HERE)

    def remix(self, public_id: object, visitor: Visitor, *, vary: bool) -> Remix:
        """A mascot's parameters, seed included, for the form: one image, its seed kept. To vary it ("More like
        this"): the mascot itself, by its share id ("mascot:<id>"), as the picture to mix in, a couple of new seeds.
        Its picture is read when the job runs, if the browser may still see it; nothing is copied."""
        entry = self.open(public_id, visitor)
        if vary:
            self._check_variation_quota(visitor)
        values = entry.remix_request().as_dict()  # its own seed, one image: the seed belongs to this one image
        if vary and self.logos is not None:
            values.update(logo=BASED_ON_PREFIX + entry.public_id, logo_weight=VARIATION_WEIGHT)
            values["num_images_per_prompt"] = VARIATIONS
            return Remix(values, None, randomize_seed=True, based_on_idea=entry.request.prompt)
        based_on = based_on_mascot(entry.request.logo)
        if based_on is None:
            logo, notice = self._logo_to_remix(entry, visitor)
            values["logo"] = logo
            logo_path = self.logos.path(logo) if self.logos is not None and logo else None
            return Remix(values, logo_path, randomize_seed=False, notice=notice)
        source = self.store.mascot(based_on, self.owner(visitor))  # a variation: of a mascot still there?
        if source is None:
            values["logo"] = ""  # private now or deleted: the words and settings alone
        return Remix(values, None, randomize_seed=False, based_on_idea=source.request.prompt if source else None)

    def _logo_to_remix(self, entry: MascotEntry, visitor: Visitor) -> tuple[str, Notice | None]:
        """The logo a remix keeps: its maker's own upload, granted anew (a logo uploaded before grants existed
        too), and a brand's; another person's upload is theirs, and is left out with a word why."""
        logo_id = stored_logo_id(entry.request.logo)
        if logo_id is None or self.logos is None:
            return "", None
        if logo_id in self.logo_grants.public_ids:
            return logo_id, None
        if entry.is_owner:
            return self.logo_grants.grant(logo_id, self.owner(visitor)), None
        return "", Notice(sentences.LOGO_LEFT_OUT)

    def mascots_left_today(self, visitor: Visitor) -> int:
        """How many more mascots the browser may make today: the smaller of its own and its network's figures."""
        now = self.clock()
        left = self.store.quota(self.owner(visitor), now=now).remaining
        network = self._network_quota(self.network(visitor), now)
        return left if network is None else min(left, network.remaining)

    def _check_variation_quota(self, visitor: Visitor) -> None:
        """More like this makes VARIATIONS mascots: refused up front, with the reason, when today's quota cannot pay
        for them (the Generate it leads to would be refused anyway, far from the button that was pressed)."""
        try:
            self._check_quota(self.owner(visitor), self.network(visitor), VARIATIONS)
        except Refusal as error:
            raise Refusal(f"More like this makes {VARIATIONS} mascots. {error.message}") from None

    # ---- logos and export ----------------------------------------------------------------------------------
    def upload_logo(self, upload: Path | None, visitor: Visitor | None) -> str:
        """Keep an uploaded logo and return its id, for a request's `logo`; "" for no upload. Pictures read count
        per browser and network (service.limits): each costs a decode."""
        if self.logos is None:
            raise Refusal(sentences.NO_LOGOS, "logo")
        if upload is None:
            return ""
        if visitor is None:  # a logo is granted to the browser that uploads it: it needs its cookie
            raise Refusal(sentences.NO_COOKIE)
        self._count(self.limiters.pictures, "picture", visitor)
        try:
            return self.logo_grants.grant(self.logos.save(upload), self.owner(visitor))
        except LogoRefused as error:
            raise Refusal(str(error), "logo") from None

    @refuses_when_store_unavailable
    def admit_export(self, visitor: Visitor | None) -> None:
        """Before an export takes a queue slot (the event's validator): refused while the browser's last ZIP is being
        made or when it asked for too many lately. Takes a running lease that `export` ends."""
        self._admit(self.limiters.exports, "ZIP", sentences.EXPORT_RUNNING, visitor)

    def export(self, visitor: Visitor, on_progress: Progress | None = None) -> Download:
        """Every mascot the browser made (newest first, at most store.export.EXPORT_CAP) as one ZIP for download.
        The last ZIP is handed out again while its mascots are unchanged (and it is still on disk); only a new one
        counts against the browser's limit (service.limits)."""
        owner_hash, now = self.owner(visitor), self.clock()
        try:
            contents = export_fingerprint(self.store, owner_hash)
            reused = self._reusable_export(owner_hash, contents)
            if reused is not None:
                return reused
            self._count(self.limiters.exports, "ZIP", visitor)
            destination = self.downloads.new_export_path(owner_hash, f"my-mascots-{now:%Y-%m-%d}.zip")
            result = export_mascots(self.store, owner_hash, destination, now=now, on_progress=on_progress)
        except NothingToExport as error:
            raise Refusal(str(error)) from None
        finally:
            self.limiters.exports.finish(visitor.token_hash, self.network(visitor).key)
        warning = Notice(result.note(), warning=True) if result.missing or result.truncated else None
        made = Download(result.path, warning)
        with self._exports_lock:
            self._exports[owner_hash] = (contents, made)
        return made

    def last_export(self, visitor: Visitor) -> Download | None:
        """The browser's last ZIP while it is still kept, for the page to offer (None: none, or pruned)."""
        owner_hash = self.owner(visitor)
        with self._exports_lock:
            last = self._exports.get(owner_hash)
        return last[1] if last is not None and last[1].path.is_file() else None

    def _reusable_export(self, owner_hash: str, contents: str) -> Download | None:
        """The browser's last ZIP when it holds exactly `contents` and is still on disk (downloads are pruned)."""
        with self._exports_lock:
            last = self._exports.get(owner_hash)
        if last is None or last[0] != contents or not last[1].path.is_file():
            return None
        return last[1]

    # ---- one person, several devices ---------------------------------------------------------------------------
    @refuses_when_store_unavailable
    def make_device_link(self, visitor: Visitor) -> str:
        """A one-time link (15 minutes) that makes another browser show this browser's mascots."""
        try:
            # The visitor's own token, resolved once by the store: resolved here too, a phone linked to a browser
            # that has since opened another's link would hand out a link to that other browser's mascots.
            made = self.store.make_device_link(visitor.token_hash, self.clock())
        except TooManyLinks:
            raise Refusal(sentences.TOO_MANY) from None
        return device_url(visitor.page_url, made.code)

    def other_devices(self, visitor: Visitor) -> str:
        """The lines counting the other devices that show the visitor's mascots, and the links that still work."""
        others = sentences.others_line(self.store.other_devices(visitor.token_hash))
        links = self.store.open_device_links(visitor.token_hash, now=self.clock())
        return f"{others}\n\n{sentences.open_links_line(links)}"

    @refuses_when_store_unavailable
    def revoke_device_links(self, visitor: Visitor) -> DevicesAnswer:
        """Every device link of the visitor's mascots that was not opened yet stops working."""
        revoked = self.store.revoke_device_links(visitor.token_hash)
        notice = Notice(f"{sentences.plural(revoked, 'link')} revoked." if revoked else sentences.NO_OPEN_LINKS)
        return DevicesAnswer(notice, self.other_devices(visitor))

    def device_question(self, visitor: Visitor, code: str) -> DeviceQuestion:
        """What opening the link would do, in words, and the choices that make sense; changes nothing. A link can
        come from anyone: by default this browser's own mascots stay apart from the link's device."""
        state = self.store.peek_device_link(visitor.token_hash, code, now=self.clock()) if is_code(code) else "invalid"
        if state != "open":
            return DeviceQuestion(sentences.ALREADY if state == "already" else sentences.EXPIRED)
        if self.store.is_linked_device(visitor.token_hash):
            return DeviceQuestion(f"{sentences.QUESTION}\n\n{sentences.ALREADY_LINKED}", sentences.JOIN_PLAIN)
        own = self.store.own_mascot_count(visitor.token_hash)
        if not own:
            return DeviceQuestion(sentences.QUESTION, sentences.JOIN_PLAIN)
        count = sentences.plural(own, "mascot")
        return DeviceQuestion(
            f"{sentences.QUESTION}\n\n{sentences.KEEP_APART.format(count=count)}",
            sentences.JOIN_KEEPING.format(count=count),
            sentences.JOIN_MOVING.format(count=count),
        )

    @refuses_when_store_unavailable
    def disconnect_other_devices(self, visitor: Visitor) -> DevicesAnswer:
        """Only this browser shows its mascots from now on; refused while a job is in flight, whose images would be
        saved under the owner the row had."""
        before = self.owner(visitor)
        done = self.store.disconnect_other_devices(visitor.token_hash, now=self.clock())
        if done.outcome == "job_in_flight":
            raise Refusal(sentences.WAIT_TO_DISCONNECT)
        disconnected = done.outcome == "disconnected"
        if disconnected and before != visitor.token_hash:
            # A linked browser took the mascots over from the browser that made them first, whose owner hash the
            # ZIPs are kept under: that browser, now a stranger, would still download them (and deleting a mascot
            # forgets only the new owner's ZIPs).
            self._forget_exports(before)
        notice = Notice(sentences.disconnected_line(done.devices, done.revoked_links)) if disconnected else None
        return DevicesAnswer(notice, self.other_devices(visitor))

    @refuses_when_store_unavailable
    def stop_showing_here(self, visitor: Visitor) -> DevicesAnswer:
        """This browser stops showing the mascots of the device it was linked to; refused for the browser that made
        them first (it disconnects the others instead)."""
        stopped = self.store.stop_showing_here(visitor.token_hash)
        others = self.store.other_devices(visitor.token_hash)
        if stopped:
            notice = Notice(sentences.STOPPED_HERE)
        elif others:
            raise Refusal(sentences.FIRST_BROWSER)
        else:
            notice = Notice(sentences.NO_OTHER_DEVICES)
        return DevicesAnswer(notice, self.other_devices(visitor))

    @refuses_when_store_unavailable
    def open_device_link(self, visitor: Visitor, code: str, *, move_mascots: bool = False) -> Notice:
        """Make this browser show the mascots of the browser that made the link: a notice (it worked, or nothing
        changed) or a warning (it did not). This browser's own mascots move there only with `move_mascots` (the
        person's explicit, confirmed choice); else they stay apart and come back with "Stop showing my mascots
        here"."""
        if not is_code(code):  # its shape is checked before the database is asked
            return Notice(sentences.EXPIRED, warning=True)
        redeemed = self.store.redeem_device_link(visitor.token_hash, code, now=self.clock(), move_mascots=move_mascots)
        if redeemed.outcome == "joined":
            return Notice(sentences.joined_line(redeemed.moved_images, redeemed.left_others, redeemed.kept_images))
        warnings = {"job_in_flight": sentences.WAIT, "retry": sentences.RETRY}
        if redeemed.outcome == "already":
            return Notice(sentences.ALREADY)
        return Notice(warnings.get(redeemed.outcome, sentences.EXPIRED), warning=True)
