"""`load_text`: a corpus from a string, a file, a folder, or a list of them."""

import os

TEXT_EXTENSIONS = (".txt", ".md")


def load_text(source):
    """Reads a text corpus from a string, a file, a folder or a list of these.

    A str that names an existing file or folder is read as one; any other str is the text itself, except
    that a str that looks like a path (it ends in `.txt` / `.md`, or holds a path separator and no newline)
    but does not exist raises `FileNotFoundError`. A folder contributes its `.txt` and `.md` files, searched
    recursively in sorted order. Files are read as UTF-8. Several documents are joined with a blank line
    (`"\\n\\n"`).

    Args:
        source: str, path, or list of them. The text, or where to read it.

    Returns:
        str. The corpus.

    Example:

    ```python
    text = kerasllm.data.load_text("my_corpus/")  # every .txt and .md file below my_corpus/
    text = kerasllm.data.load_text(["notes.txt", "Some more text."])
    ```
    """
    return "\n\n".join(load_documents(source))


def load_documents(source):
    """Like `load_text`, but returns the documents as a list: one per file and one per text string.

    Empty documents are left out; an empty corpus raises `ValueError`.
    """
    documents = [document for document in _documents(source) if document]
    if not documents:
        raise ValueError(
            f"The corpus is empty: {_describe(source)} holds no text. Pass text as a str, a .txt/.md file, "
            "a folder of them, or a list of these (e.g. `kerasllm.datasets.shakespeare()`)."
        )
    return documents


def _documents(source):
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, bytes):
        raise ValueError("`source` is bytes; decode it first, e.g. `source.decode('utf-8')`.")
    if isinstance(source, str):
        if os.path.isdir(source):
            return [_read(path) for path in _text_files(source)]
        if os.path.isfile(source):
            return [_read(source)]
        if _looks_like_path(source):
            raise FileNotFoundError(
                f"No such file or folder: {source!r}. Check the path; to pass text itself, pass a string "
                "that is not a path."
            )
        return [source]
    if isinstance(source, (list, tuple)):
        return [document for item in source for document in _documents(item)]
    raise ValueError(
        f"`source` must be a str (text or a path), a path, or a list of them, but got a {type(source).__name__}."
    )


def _looks_like_path(text):
    if "\n" in text:
        return False
    return text.lower().endswith(TEXT_EXTENSIONS) or os.sep in text or (os.altsep is not None and os.altsep in text)


def _text_files(folder):
    paths = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        paths.extend(os.path.join(root, name) for name in sorted(files) if name.lower().endswith(TEXT_EXTENSIONS))
    return paths


def _read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def _describe(source):
    text = repr(source)
    return text if len(text) <= 80 else text[:77] + "..."
