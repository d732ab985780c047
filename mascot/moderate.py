"""The operator's moderation tools: list reported mascots, and hide, restore or delete one, on the app's own data.

Usage:
    python -m mascot.moderate list                  # reported or hidden mascots, most reported first
    python -m mascot.moderate hide PUBLIC_ID        # take a mascot out of the gallery now, reports or not
    python -m mascot.moderate restore PUBLIC_ID     # show it as its owner set it again; its reports are cleared
    python -m mascot.moderate delete PUBLIC_ID      # delete it as its owner would: file, thumbnail, likes, reports
    python -m mascot.moderate --data-dir /data list
    python -m mascot.moderate --database-url postgresql://user:pass@host/db --data-dir /data list

It reads the app's settings: --data-dir and --database-url (before the command), else MASCOT_DATA_DIR and
MASCOT_DATABASE_URL, else ./data. PUBLIC_ID is the id in a share link (/?mascot=PUBLIC_ID). Each command prints one
line per mascot (list) or one line saying what it did; an unknown id exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from mascot.moderation import HIDDEN_AFTER_REPORTS, TAKEN_DOWN, ReportedMascot, describe_reasons
from mascot.settings import Settings, add_storage_arguments, settings_from
from mascot.store import MascotStore

STATES = {HIDDEN_AFTER_REPORTS: "hidden after reports", TAKEN_DOWN: "taken down"}
DONE = {
    "hide": "Hid {public_id}: it is out of the gallery and its share link works for its owner only.",
    "restore": "Restored {public_id}: its reports are cleared and it shows as its owner set it.",
    "delete": "Deleted {public_id}: its image, thumbnail, likes and reports are gone.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mascot.moderate", description="Review reported mascots: list, hide, restore, delete."
    )
    add_storage_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="Reported or hidden mascots, most reported first.")
    for name, does in (
        ("hide", "Take a mascot out of the gallery now."),
        ("restore", "Show a mascot again as its owner set it and clear its reports."),
        ("delete", "Delete a mascot for good, as its owner's Delete does."),
    ):
        command = commands.add_parser(name, help=does)
        command.add_argument("public_id", metavar="PUBLIC_ID", help="The id in its share link (/?mascot=PUBLIC_ID).")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # stderr: not the output
    args = build_parser().parse_args(argv)
    settings = settings_from(args, environ)
    missing = missing_database(settings)
    if missing is not None:
        print(
            f"There is no database at {missing}: pass the --data-dir or --database-url the app uses.", file=sys.stderr
        )
        return 2
    store = MascotStore(settings.resolved_database_url, settings.images_dir, upkeep=False)
    try:
        if args.command == "list":
            return list_reported(store)
        return act(store, args.command, args.public_id)
    finally:
        store.close()


def missing_database(settings: Settings) -> Path | None:
    """The SQLite file the settings name when it does not exist: a wrong folder must not get a new, empty database."""
    url = urlparse(settings.resolved_database_url)
    if url.scheme != "sqlite" or url.path[1:] in ("", ":memory:"):
        return None
    path = Path(url.path[1:])
    return None if path.exists() else path


def list_reported(store: MascotStore) -> int:
    reported = store.reported_mascots()
    if not reported:
        print("No mascot is reported or hidden.")
    for item in reported:
        print(describe(item))
    return 0


def describe(item: ReportedMascot) -> str:
    """One line: id, reports by reason, networks, state, prompt (JSON-quoted: one line whatever it holds), file."""
    reports = "report" if item.reports == 1 else "reports"
    networks = "network" if item.networks == 1 else "networks"
    counts = f"{item.reports} {reports} ({describe_reasons(item.reasons)}) from {item.networks} {networks}"
    state = STATES.get(item.moderation, "not hidden")
    return f"{item.public_id}  {counts}  {state}  {json.dumps(item.prompt, ensure_ascii=False)}  {item.path}"


def act(store: MascotStore, command: str, public_id: str) -> int:
    actions: dict[str, Callable[[str], bool]] = {
        "hide": store.hide_mascot,
        "restore": store.restore_mascot,
        "delete": store.delete_mascot_as_operator,
    }
    if not actions[command](public_id):
        print(f"No mascot has the id {public_id!r}: copy it from `list` or from its share link.", file=sys.stderr)
        return 1
    print(DONE[command].format(public_id=public_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
