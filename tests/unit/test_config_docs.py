"""README's config tables are generated from service/config.py; these tests catch drift."""

import re

import pytest

from service.config import BROKER_KEYS, GENERATED, README, TOPIC_KEYS, main, render_readme

REGENERATE = "README's config tables differ from service/config.py: run `python -m service.config --write-readme`"


def test_readme_tables_match_the_key_tables():
    text = README.read_text()
    assert render_readme(text) == text, REGENERATE


def test_generated_sections_list_every_key_once():
    sections = "".join(m[0] for m in GENERATED.finditer(README.read_text()))
    for name in BROKER_KEYS.keys() | TOPIC_KEYS.keys():
        assert len(re.findall(rf"^\| `{re.escape(name)}` \|", sections, re.MULTILINE)) == 1, name


def test_write_readme_rewrites_only_the_generated_sections(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text("# Title\n\nprose before\n<!-- generated: broker config -->\n| old | table |\n"
                     "<!-- end generated -->\nprose between\n<!-- generated: topic config -->\n"
                     "<!-- end generated -->\nprose after\n")
    assert main(["--write-readme", str(stale)]) == 0
    text = stale.read_text()
    assert "| old | table |" not in text
    assert text.startswith("# Title\n\nprose before\n<!-- generated: broker config -->\n| key | type |")
    assert "\n<!-- end generated -->\nprose between\n" in text
    assert text.endswith("<!-- end generated -->\nprose after\n")
    assert "| `log.segment.bytes` | int | `1073741824` (1 GiB) | no |" in text
    assert "| `retention.ms` | long | `604800000` (7 days) | `log.retention.ms` | yes |" in text
    assert "| `max.message.bytes` | int | `1048588` (1 MiB + 12 B) | `message.max.bytes` | yes |" in text
    assert render_readme(text) == text


def test_a_missing_section_is_an_error():
    with pytest.raises(ValueError, match="topic config"):
        render_readme("<!-- generated: broker config -->\n<!-- end generated -->\n")


@pytest.mark.parametrize("key", [*BROKER_KEYS.values(), *TOPIC_KEYS.values()], ids=lambda k: k.name)
def test_every_key_has_a_sentence_of_doc(key):
    assert key.doc[:1].isupper() and key.doc.endswith("."), key.doc
    assert "|" not in key.doc.replace("[L|U]", ""), "a table cell would split"
