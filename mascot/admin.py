"""The operator's moderation tools: list reported mascots, and hide, restore or delete one, on the app's own data.

Usage:
    python -m mascot.admin list                  # reported or hidden mascots, most reported first
    python -m mascot.admin hide PUBLIC_ID        # take a mascot out of the gallery now, reports or not
    python -m mascot.admin restore PUBLIC_ID     # show it as its owner set it again; its reports are cleared
    python -m mascot.admin delete PUBLIC_ID      # delete it as its owner would: file, thumbnail, likes, reports
    python -m mascot.admin --blocked-words PATH blocked          # mascots whose idea uses an entry of PATH
    python -m mascot.admin --blocked-words PATH blocked --hide   # take each of them down, as `hide` does
    python -m mascot.admin --data-dir /data list
    python -m mascot.admin --database-url postgresql://user:pass@host/db --data-dir /data list

It reads the app's settings: --data-dir, --database-url and --blocked-words (before the command), else
MASCOT_DATA_DIR, MASCOT_DATABASE_URL and MASCOT_BLOCKED_WORDS, else ./data and no words file. PUBLIC_ID is the id in
a share link (/?mascot=PUBLIC_ID). Each command prints one line per mascot (list, blocked) or one line saying what it
did; an unknown id exits with status 1. `blocked` matches the stored ideas (prompts, not negative prompts) as the app
matches new ones: the gallery's mascots first, then the others (private, hidden, taken down, file missing). With
--hide it takes down each one not taken down already (private ones too, so that they cannot be made public later);
without a words file it exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from mascot.prompt.wordfilter import BlockedEntry, BlockedWords, BlockedWordsError, load_blocked_words
from mascot.service.downloads import DownloadFolder
from mascot.settings import Settings, add_blocked_words_argument, add_storage_arguments, settings_from
from mascot.store.moderation import (
    HIDDEN_AFTER_REPORTS,
    IDEAS_BATCH_SIZE,
    TAKEN_DOWN,
    ReportedMascot,
    StoredIdea,
    describe_reasons,
)
from mascot.store.store import MascotStore

STATES = {HIDDEN_AFTER_REPORTS: "hidden after reports", TAKEN_DOWN: "taken down"}
HIDDEN = "it is out of the gallery and its share link works for its owner only."
DONE = {
    "hide": "Hid {public_id}: " + HIDDEN,
    "restore": "Restored {public_id}: its reports are cleared and it shows as its owner set it.",
    "delete": "Deleted {public_id}: its image, thumbnail, likes, reports and downloads are gone.",
}
NO_DOWNLOADS = (
    "There is no downloads folder at {folder}: if the app keeps its data elsewhere, a sticker or ZIP of this mascot "
    "stays there until it is an hour old. Pass the app's --data-dir to remove them too."
)
NO_WORDS_FILE = (
    "`blocked` needs the blocked-words file: pass --blocked-words PATH before the command, or set "
    "MASCOT_BLOCKED_WORDS, as the app is given it."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mascot.admin", description="Review reported mascots: list, hide, restore, delete."
    )
    add_storage_arguments(parser)
    add_blocked_words_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="Reported or hidden mascots, most reported first.")
    blocked = commands.add_parser("blocked", help="Mascots whose idea uses an entry of the blocked-words file.")
    blocked.add_argument("--hide", action="store_true", help="Take each one down, as `hide PUBLIC_ID` does.")
    blocked.add_argument(
        "--batch-size",
        type=positive_int,
        default=IDEAS_BATCH_SIZE,
        help=f"Rows read a query (default {IDEAS_BATCH_SIZE}).",
    )
    for name, does in (
        ("hide", "Take a mascot out of the gallery now."),
        ("restore", "Show a mascot again as its owner set it and clear its reports."),
        ("delete", "Delete a mascot for good, as its owner's Delete does."),
    ):
        command = commands.add_parser(name, help=does)
        command.add_argument("public_id", metavar="PUBLIC_ID", help="The id in its share link (/?mascot=PUBLIC_ID).")
    return parser


ONE_MASCOT_COMMANDS = {"hide", "restore", "delete"}


def ids_taken_literally(argv: Sequence[str]) -> list[str]:
    """The arguments with `--` put before a share id that starts with "-" (ids are URL-safe base64, so one in 64 does):
    argparse would take it for an unknown option and say only "the following arguments are required"."""
    arguments = list(argv)
    for index, argument in enumerate(arguments[:-1]):
        following = arguments[index + 1]
        if argument in ONE_MASCOT_COMMANDS and following.startswith("-") and following not in {"-h", "--help", "--"}:
            return [*arguments[: index + 1], "--", *arguments[index + 1 :]]
    return arguments


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # stderr: not the output
    args = build_parser().parse_args(ids_taken_literally(sys.argv[1:] if argv is None else argv))
    settings = settings_from(args, environ)
    try:
        # Before the database is opened (and migrated): a wrong words file is the operator's typo, not a reason to
        # touch the data.
        words = words_file(settings) if args.command == "blocked" else BlockedWords()
    except BlockedWordsError as error:
        print(error, file=sys.stderr)
        return 2
    missing = missing_database(settings)
    if missing is not None:
        print(
            f"There is no database at {missing}: pass the --data-dir or --database-url the app uses.", file=sys.stderr
        )
        return 2
    store = MascotStore(
        settings.resolved_database_url,
        settings.images_dir,
        upkeep=False,
        database_connections=settings.database_connections,
    )
    try:
        return run_command(store, args, words, DownloadFolder(settings.downloads_dir))
    finally:
        store.close()


def run_command(store: MascotStore, args: argparse.Namespace, words: BlockedWords, downloads: DownloadFolder) -> int:
    if args.command == "list":
        return list_reported(store)
    if args.command == "blocked" and args.hide:
        return take_down_blocked(store, words, args.batch_size)
    if args.command == "blocked":
        return list_blocked(store, words, args.batch_size)
    return act(store, args.command, args.public_id, downloads)


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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return value


def words_file(settings: Settings) -> BlockedWords:
    """The operator's blocked-words file, read as the app reads it; none set is an error here, not "block nothing"."""
    if settings.blocked_words is None:
        raise BlockedWordsError(NO_WORDS_FILE)
    return load_blocked_words(settings.blocked_words)


def blocked_mascots(
    store: MascotStore, words: BlockedWords, batch_size: int, *, taken_down: bool
) -> Iterator[tuple[StoredIdea, BlockedEntry]]:
    """Stored mascots whose idea uses an entry, with the entry: the gallery's first (they are what people see now),
    then the rest. Two id-ordered passes rather than a sort, so only one batch of rows is ever held."""
    for in_gallery in (True, False):
        for idea in store.stored_ideas(in_gallery=in_gallery, taken_down=taken_down, batch_size=batch_size):
            entry = words.find(idea.prompt)
            if entry is not None:
                yield idea, entry


def list_blocked(store: MascotStore, words: BlockedWords, batch_size: int) -> int:
    found = 0
    for idea, entry in blocked_mascots(store, words, batch_size, taken_down=True):
        print(describe_blocked(idea, entry))
        found += 1
    if not found:
        print(f"No stored mascot's idea uses an entry of {words.source}.")
    return 0


def take_down_blocked(store: MascotStore, words: BlockedWords, batch_size: int) -> int:
    """Take down each match not taken down already; hiding one does not disturb the keyset pass that found it."""
    hidden = 0
    for idea, entry in blocked_mascots(store, words, batch_size, taken_down=False):
        if store.hide_mascot(idea.public_id):  # False: its owner deleted it meanwhile
            print(f"Hid {idea.public_id} ({entry.describe(None)}): {HIDDEN}")
            hidden += 1
    if not hidden:
        print(f"No mascot whose idea uses an entry of {words.source} is left to take down.")
    else:
        print(f"{hidden} {'mascot' if hidden == 1 else 'mascots'} taken down.")
    return 0


def describe_blocked(idea: StoredIdea, entry: BlockedEntry) -> str:
    """One line: id, the entry and its line, state, idea (JSON-quoted, as `list` does), file."""
    prompt = json.dumps(idea.prompt, ensure_ascii=False)
    return f"{idea.public_id}  {entry.describe(None)}  {idea_state(idea)}  {prompt}  {idea.path}"


def idea_state(idea: StoredIdea) -> str:
    if idea.moderation in STATES:
        return STATES[idea.moderation]
    if not idea.is_public:
        return "private"
    return "file missing" if idea.file_missing else "in the gallery"


def act(store: MascotStore, command: str, public_id: str, downloads: DownloadFolder) -> int:
    def delete(public_id: str) -> bool:
        made_by = store.delete_mascot_as_operator(public_id)
        if made_by is not None:  # its sticker, and its owner's ZIPs (which hold its picture), as the owner's delete
            downloads.forget_sticker(public_id)
            downloads.forget_exports(made_by)
            if not downloads.root.is_dir():  # on PostgreSQL the data folder is not needed to find the database
                print(NO_DOWNLOADS.format(folder=downloads.root), file=sys.stderr)
        return made_by is not None

    actions: dict[str, Callable[[str], bool]] = {
        "hide": store.hide_mascot,
        "restore": store.restore_mascot,
        "delete": delete,
    }
    if not actions[command](public_id):
        print(f"No mascot has the id {public_id!r}: copy it from `list` or from its share link.", file=sys.stderr)
        return 1
    print(DONE[command].format(public_id=public_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
