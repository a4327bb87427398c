import os

import pytest

from kerasllm.data import load_documents, load_text


def test_plain_string_is_text():
    assert load_text("To be, or not to be") == "To be, or not to be"


def test_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.md").write_text("first ü", encoding="utf-8")
    (tmp_path / "skip.csv").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third")
    assert load_text(str(tmp_path / "b.txt")) == "second"
    assert load_text(tmp_path / "a.md") == "first ü"
    assert load_documents(str(tmp_path)) == ["first ü", "second", "third"]
    assert load_text(tmp_path) == "first ü\n\nsecond\n\nthird"


def test_list_mixes_sources(tmp_path):
    (tmp_path / "a.txt").write_text("from a file")
    assert load_documents(["inline text", str(tmp_path / "a.txt"), ""]) == ["inline text", "from a file"]


@pytest.mark.parametrize("source", ["", [], ["", ""]])
def test_empty_corpus_raises(source):
    with pytest.raises(ValueError, match="corpus is empty"):
        load_text(source)


def test_empty_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="corpus is empty"):
        load_text(str(tmp_path))


@pytest.mark.parametrize("name", ["missing.txt", "notes.md", os.path.join("no", "such", "folder")])
def test_missing_path_raises_with_the_path(tmp_path, name):
    path = str(tmp_path / name) if os.sep in name else name
    with pytest.raises(FileNotFoundError, match="No such file"):
        load_text(path)


def test_text_with_a_slash_and_newlines_is_text():
    text = "and/or\nsomething else"
    assert load_text(text) == text


def test_bad_type_raises():
    with pytest.raises(ValueError, match="must be a str"):
        load_text(42)
