"""What a person can do, for every entry point: the page's handlers only adapt it to components."""

from mascot.service.actions import DeviceQuestion, DevicesAnswer, Download, MascotService, Remix
from mascot.service.answers import Notice, Refusal, Visitor
from mascot.service.downloads import DownloadFolder

__all__ = [
    "DeviceQuestion",
    "DevicesAnswer",
    "Download",
    "DownloadFolder",
    "MascotService",
    "Notice",
    "Refusal",
    "Remix",
    "Visitor",
]
