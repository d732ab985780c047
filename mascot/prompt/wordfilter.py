"""Words the operator does not allow in ideas (--blocked-words): reading the file, and whether a prompt uses one.

Entries match whole words (a phrase: its words in order, any separators between them) after the file and the prompt
are folded alike: case (casefold); compatibility forms and diacritics (NFKD, combining marks dropped), plus the Latin
letters NFKD leaves whole (LATIN_VARIANTS); invisible characters dropped, so they join what is around them; a run of
one-letter words read as one word, whole ("b l o o d", "b.l-o.o.d") and parted where its separator changes
("a b.l.o.o.d" also reads "blood"); Cyrillic and Greek look-alikes (LOOKALIKES) read as Latin inside a word that also
has Latin letters. What it does not see is listed in docs/deploying.md and pinned by tests/test_wordfilter.py.
This module imports no torch.
"""

from __future__ import annotations

import itertools
import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mascot.prompt.request import GenerationRequest, InvalidRequest

log = logging.getLogger(__name__)

# Not the word itself: the page must not become a list of what is blocked.
REFUSAL = "This idea uses words this site does not allow. Please describe your mascot differently."

DROPPED = {"Mn", "Me", "Cc", "Cf", "Cs", "Co", "Cn"}  # diacritics after NFKD, and invisible characters: they join
WORD_CATEGORIES = {"L", "N", "M"}  # letters, digits and spacing marks (Indic vowel signs) make words; the rest parts
# Latin letters NFKD does not decompose, read as the plain letters people see in them.
LATIN_VARIANTS = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ð": "d", "ħ": "h", "ı": "i", "ŧ": "t", "ɡ": "g", "ƀ": "b", "æ": "ae", "œ": "oe"}
)
# Cyrillic and Greek letters that look like Latin ones, lower case (text is casefolded first, so Cyrillic small ve
# stands for its capital, which looks like "B"). Read as Latin only inside a word that also has Latin letters: Russian
# and Greek words stay as written. Letters whose capital and small forms look like two different Latin letters (Greek
# nu, upsilon, eta) are left out.
LOOKALIKES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
        "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w",
        "α": "a", "β": "b", "ε": "e", "ζ": "z", "ι": "i", "κ": "k", "ο": "o", "ρ": "p", "τ": "t", "χ": "x",
    }
)  # fmt: skip


class Word(NamedTuple):
    """A word of folded text and the separator before it ("" at the start)."""

    text: str
    gap: str


class BlockedWordsError(ValueError):
    """The blocked-words file cannot be used; the message is a sentence for the operator, naming the file."""


@dataclass(frozen=True)
class BlockedEntry:
    """One line of the file: as written (for the operator's log), where, and the words it matches."""

    text: str
    line: int
    words: tuple[str, ...]

    def describe(self, source: Path | None) -> str:
        where = f" of {source}" if source is not None else ""
        return f"{self.text!r} (line {self.line}{where})"


class BlockedWords:
    """The operator's entries, indexed by their words. Without entries nothing is blocked and a check costs nothing."""

    def __init__(self, entries: Iterable[BlockedEntry] = (), source: Path | None = None) -> None:
        self.source = source
        self.entries = tuple(entries)
        self._by_words: dict[tuple[str, ...], BlockedEntry] = {}
        for entry in self.entries:
            self._by_words.setdefault(entry.words, entry)
        self._lengths = sorted({len(words) for words in self._by_words})

    @classmethod
    def load(cls, path: Path) -> BlockedWords:
        """Read the file; a missing, unreadable or unusable one stops the app at start with a sentence naming it."""
        return cls(parse_entries(read_file(path), path.resolve()), path.resolve())

    def find(self, text: str) -> BlockedEntry | None:
        """The first entry the text uses as whole words (after folding, see the module's docstring), or None."""
        if not self._by_words:
            return None
        for view in readings(words_and_gaps(text)):
            entry = self._first_in(view)
            if entry is not None:
                return entry
        return None

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse a request whose idea uses a blocked entry. Only the prompt: it is what the mascot shows. The
        negative prompt lists what to keep out of the picture and so names exactly these words; it is not checked."""
        entry = self.find(request.prompt)
        if entry is None:
            return
        # The rule, not the prompt: a refused idea is never stored, and logs travel further than the database.
        log.info("Refused an idea: it uses the blocked entry %s.", entry.describe(self.source))
        raise InvalidRequest("prompt", REFUSAL)

    def _first_in(self, words: list[str]) -> BlockedEntry | None:
        for start in range(len(words)):
            for length in self._lengths:
                entry = self._by_words.get(tuple(words[start : start + length]))
                if entry is not None:
                    return entry
        return None


def load_blocked_words(path: Path | None) -> BlockedWords:
    """The operator's file, or nothing blocked when none is set (the default)."""
    if path is None:
        return BlockedWords()
    blocked = BlockedWords.load(path)
    log.info("Refusing ideas that use any of the %d entries in %s.", len(blocked.entries), blocked.source)
    return blocked


def read_file(path: Path) -> str:
    """The file's UTF-8 text (a BOM is allowed); its problems as sentences naming it."""
    where = path.resolve()
    fix = "set --blocked-words (MASCOT_BLOCKED_WORDS) to a UTF-8 text file, or leave it unset to block nothing"
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BlockedWordsError(f"The blocked-words file {where} does not exist: {fix}.") from None
    except UnicodeDecodeError as error:
        raise BlockedWordsError(
            f"The blocked-words file {where} is not UTF-8 text (byte {error.start} cannot be read): save it as UTF-8."
        ) from None
    except OSError as error:
        raise BlockedWordsError(f"The blocked-words file {where} cannot be read ({error.strerror}): {fix}.") from None


def parse_entries(text: str, source: Path) -> list[BlockedEntry]:
    """One entry a line; `#` starts a comment; blank lines are skipped. An entry with nothing to match is refused,
    since ignoring it would leave the operator believing it blocks something."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        written = line.split("#", 1)[0].strip()
        if not written:
            continue
        words = tuple(read_lookalikes(word) for word in split_words(written))
        if not words:
            raise BlockedWordsError(
                f"Line {number} of the blocked-words file {source} has no letters or digits to match: {written!r}."
            )
        entries.append(BlockedEntry(written, number, words))
    return entries


def fold(text: str) -> str:
    """The text as the filter reads it: case and compatibility forms folded, diacritics and invisible characters
    dropped (so they join what is around them), any whitespace one space."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    kept = []
    for character in decomposed:
        if character.isspace():
            kept.append(" ")
        elif unicodedata.category(character) not in DROPPED:
            kept.append(character)
    return "".join(kept).translate(LATIN_VARIANTS)


def is_word_character(character: str) -> bool:
    return unicodedata.category(character)[0] in WORD_CATEGORIES


def words_and_gaps(text: str) -> list[Word]:
    """The folded text's words, each with the separator before it. Spaces next to punctuation do not count and a run
    of spaces is one, so "b . l" and "b. l" part letters as "b.l" does, and "b  l" as "b l" does."""
    words: list[Word] = []
    gap = ""
    for in_word, group in itertools.groupby(fold(text), key=is_word_character):
        chunk = "".join(group)
        if in_word:
            words.append(Word(chunk, gap))
        else:
            gap = " ".join(chunk.split()) or " "
    return words


def split_words(text: str) -> list[str]:
    """The folded text's words, in order."""
    return [word.text for word in words_and_gaps(text)]


def readings(words: list[Word]) -> list[list[str]]:
    """The ways to read the words: as written; with each run of one-letter words joined whole ("b l o o d",
    "b.l-o.o.d"); and with such a run parted where its separator changes ("a b.l.o.o.d" reads "ab", "blood")."""
    as_written = [word.text for word in words]
    whole: list[str] = []
    parted: list[str] = []
    for single, group in itertools.groupby(words, key=lambda word: len(word.text) == 1):
        run = list(group)
        if single and len(run) > 1:
            whole.append("".join(word.text for word in run))
            parted.extend(stretches(run))
        else:
            whole.extend(word.text for word in run)
            parted.extend(word.text for word in run)
    unique = [as_written]
    for view in (whole, parted):
        if view not in unique:
            unique.append(view)
    return [[read_lookalikes(word) for word in view] for view in unique]


def stretches(run: list[Word]) -> list[str]:
    """A run of one-letter words read as the stretches that have one separator throughout; neighbouring stretches
    share a letter (the separator changes after it), since it is not known which of them it belongs to."""
    letters = [word.text for word in run]
    gaps = [word.gap for word in run[1:]]  # gaps[i] parts letters[i] and letters[i + 1]
    read = []
    for _gap, indices in itertools.groupby(range(len(gaps)), key=gaps.__getitem__):
        between = list(indices)
        read.append("".join(letters[between[0] : between[-1] + 2]))
    return read


def read_lookalikes(word: str) -> str:
    """A word that mixes Latin letters with Cyrillic or Greek look-alikes, read as Latin."""
    if word.isascii() or not any("a" <= character <= "z" for character in word):
        return word
    return word.translate(LOOKALIKES)
