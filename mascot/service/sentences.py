"""The sentences the service says to people (refusals and notices), and the small helpers that word them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from mascot.prompt.request import PARAMETER_LABELS
from mascot.store.device_links import MAX_OPEN_LINKS, OpenLink
from mascot.store.quota import QuotaStatus, time_until

NO_COOKIE = "Your browser did not send its identity cookie. Allow cookies for this site and reload."
GONE = "This mascot is private or was deleted."
NOT_YOURS_TO_SHOW = "Only the browser that made a mascot can change who sees it."
NOT_YOURS_TO_DELETE = "Only the browser that made a mascot can delete it."
SHOWN = "Shown in the public gallery."
HIDDEN = "Hidden from the gallery: only you see it now."
DELETED = "Deleted."
NO_LOGOS = "This app does not mix in logos."
LOGO_GONE = "That logo is no longer here: upload it again."
LOGO_NOT_YOURS = "That logo was uploaded in another browser: upload it here to use it."
LOGO_LEFT_OUT = "Its maker's own logo stays theirs, so it is left out: upload yours under Mix in your logo."
BASED_ON_GONE = (
    "The mascot this was based on is private now or was deleted: remove it from “Based on” (✕) and try again."
)
NOT_A_RECIPE_PICTURE = "That file is not a PNG picture we can read. Drop a PNG made here (or by AUTOMATIC1111)."
NOT_A_BOOLEAN = "{name} must be true or false (a JSON boolean, not text or a number)."
NO_RECIPE = "That picture carries no settings to remix: only PNGs made here (or by AUTOMATIC1111) do."

# Device links (store.device_links keeps the rules)
NOTE = (
    "Open this link on your other device within 15 minutes. It works once. Anyone who opens it sees and manages your "
    "mascots, so share it only with yourself."
)
TOO_MANY = (
    f"You have {MAX_OPEN_LINKS} device links that still work: open one of them, or wait 15 minutes for them to expire."
)
JOINED = "This browser now shares My mascots with your other device."
ALREADY = "This browser already shows these mascots: open the link on your other device."
EXPIRED = "This device link has expired or was already used. Make a new one on your other device."
WAIT = "Wait until the mascot being made finishes, then open the link again."
RETRY = "Something changed while the link was being opened. Open it again."
NO_OTHER_DEVICES = "No other device shows your mascots."
STOPPED_HERE = "This browser no longer shows those mascots; your other device keeps them."
FIRST_BROWSER = (
    "Your mascots were first made in this browser, so they stay here. To stop another device showing them, press "
    "“Disconnect the other devices” here."
)
WAIT_TO_DISCONNECT = "Wait until the mascot being made finishes, then disconnect the other devices."
NO_OPEN_LINKS = "No link for another device is open."
# Opening a link asks first: a link can come from anyone, and joining shows everything made here from then on to
# whoever made it. Nothing happens until a button is pressed, and the first button changes nothing.
QUESTION = (
    "### Open a device link?\n"
    "This link makes this browser show **the mascots of the device that made the link**. From then on, whoever made "
    "the link sees, downloads and can delete every mascot you make in this browser. Open it only if you made it "
    "yourself, on your other device."
)
KEEP_APART = (
    "Your {count} made in this browser stay yours: the other device never sees them, and “Stop showing my mascots "
    "here” brings them back."
)
ALREADY_LINKED = (
    "This browser shows another device's mascots now; it would show this link's instead. That device keeps its own."
)
NOT_NOW = "Not now: keep this browser as it is"
JOIN_KEEPING = "Show that device's mascots here (my {count} stay mine, kept apart)"
JOIN_PLAIN = "Show that device's mascots here"
JOIN_MOVING = "Show that device's mascots here and move my {count} to it"
KEPT_APART = (
    "Your {count} made here before stay yours, apart from that device's; “Stop showing my mascots here” brings "
    "them back."
)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def quota_line(status: QuotaStatus, network: QuotaStatus | None, now: datetime) -> str:
    """What is left today as the page says it: the smaller of the browser's and its network's figures."""
    if network is not None and network.remaining < status.remaining:
        left = f"{network.remaining} of your network's {plural(network.limit, 'mascot')} left today"
    else:
        left = f"{status.remaining} of {plural(status.limit, 'mascot')} left today"
    return f"{left} · resets in {time_until(status.resets_at, now)}"


def recipe_line(source: str, values: Mapping[str, object], left_out: list[str]) -> str:
    """What a dropped picture gave the form, and what it could not, in the page's words."""
    taken = [PARAMETER_LABELS.get(name, name) for name in values if name != "num_images_per_prompt"]
    line = f"From this {source} picture: {', '.join(taken)}."
    if left_out:
        named = ", ".join(dict.fromkeys(PARAMETER_LABELS.get(name, name) for name in left_out))
        line += f" Left out (this app cannot use them as they are): {named}."
    return line


def others_line(count: int) -> str:
    """How many other devices show these mascots."""
    if not count:
        return NO_OTHER_DEVICES
    return f"Your mascots are also shown on {plural(count, 'other device')}."


def open_links_line(links: Sequence[OpenLink]) -> str:
    """The unused links that still work, each with when it was made and until when it works (UTC)."""
    if not links:
        return NO_OPEN_LINKS
    times = "; ".join(f"made {link.created_at:%H:%M}, works until {link.expires_at:%H:%M} UTC" for link in links)
    verb = "works" if len(links) == 1 else "work"
    return f"{plural(len(links), 'link')} for another device still {verb}: {times}."


def disconnected_line(devices: int, revoked_links: int = 0) -> str:
    verb = "shows" if devices == 1 else "show"
    parts = [f"{plural(devices, 'other device')} no longer {verb} your mascots."] if devices else []
    if revoked_links:
        parts.append(f"{plural(revoked_links, 'open link')} revoked.")
    return " ".join(parts)


def joined_line(moved_images: int, left_others: bool, kept_images: int = 0) -> str:
    parts = [JOINED]
    if moved_images:
        parts.append(f"The {plural(moved_images, 'mascot')} made here before moved along.")
    if kept_images:
        parts.append(KEPT_APART.format(count=plural(kept_images, "mascot")))
    if left_others:
        parts.append("It no longer shows the mascots of the device it was linked to before; that device keeps them.")
    return " ".join(parts)


def visibility_refused_line(moderation_note: str | None) -> str:
    """Why this browser may not show the mascot: it is out of the gallery after moderation, or it is not theirs."""
    if moderation_note:
        return f"{moderation_note} Until the operator restores it, it cannot be made public."
    return NOT_YOURS_TO_SHOW


# A page load after a killed server's restart, to a browser whose mascot it was making or had queued.
CUT_OFF_BY_RESTART = (
    "The server restarted while your mascot was waiting or being made, so it was not made and nothing counted "
    "against your quota. Press Generate to make it again."
)
# A check before an event failed in a way nobody foresaw (a bug): what the asker reads; the cause goes to the log.
CHECK_FAILED = "Something went wrong on our side, so nothing was started. Please try again; the error was logged."


# Limits on work that costs the server but no quota (service.limits)
EXPORT_RUNNING = "Your ZIP is still being made: wait for it to finish."
STICKER_RUNNING = "Your sticker is still being made: wait for it to finish."
TOO_MANY_AT_ONCE_HERE = "Many people on your network are doing this right now: try again in a minute."


def too_often_line(what: str, limit: int, window_s: float, wait: str) -> str:
    """Refusing work asked for more often than its limit: the limit, and when it can be asked for again."""
    minutes = round(window_s / 60)
    window = "minute" if minutes <= 1 else f"{minutes} minutes"
    return f"You reached the limit of {plural(limit, what)} per {window}. Try again in {wait}."


def must_be_boolean(name: str) -> str:
    """The refusal of a yes-or-no parameter sent as anything but a boolean ("false" is text, and text is true)."""
    return NOT_A_BOOLEAN.format(name=name)
