"""Read the handout's MyST sources (book/*.md): its exercises by label, and the titles of its labelled sections.

The student notebook takes its problem text from here (``dgm.check.exercises``), and the checker names the section
to read by its title.
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from markdown_it import MarkdownIt
from mdit_py_plugins.colon_fence import colon_fence_plugin
from mdit_py_plugins.front_matter import front_matter_plugin

from dgm.paths import BOOK

TARGET = re.compile(r"^\(([\w.-]+)\)=\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
OPTION = re.compile(r"^:([\w-]+):\s*(.*?)\s*$")


@dataclass(frozen=True)
class Exercise:
    """One ``{exercise}`` directive: its label, its title, its body (MyST, options removed) and its chapter file."""

    label: str
    title: str
    body: str
    chapter: str


def chapter_files(book=BOOK):
    return sorted(Path(book).glob("*.md"))


def directive_options(content):
    """Split a directive's content into its options (``:key: value`` lines or a ``---`` YAML block) and body."""
    lines = content.splitlines()
    options = {}
    if lines and lines[0].strip() == "---":
        end = lines.index("---", 1)
        for line in lines[1:end]:
            key, _, value = line.partition(":")
            options[key.strip()] = value.strip()
        lines = lines[end + 1:]
    else:
        while lines and OPTION.match(lines[0]):
            key, value = OPTION.match(lines[0]).groups()
            options[key] = value
            lines = lines[1:]
    return options, "\n".join(lines).strip()


def directives(path, name):
    """(argument, options, body) of every top-level ``{name}`` directive in one MyST file, in order."""
    parser = MarkdownIt("commonmark").use(front_matter_plugin).use(colon_fence_plugin)
    for token in parser.parse(Path(path).read_text()):
        if token.type in ("fence", "colon_fence") and token.info.split(maxsplit=1)[:1] == [f"{{{name}}}"]:
            argument = token.info.split(maxsplit=1)[1] if len(token.info.split(maxsplit=1)) > 1 else ""
            yield (argument.strip(), *directive_options(token.content))


@lru_cache(maxsize=4)
def exercises(book=BOOK):
    """Every exercise of the handout, by label."""
    found = {}
    for path in chapter_files(book):
        for title, options, body in directives(path, "exercise"):
            label = options.get("label")
            if label in found:
                raise ValueError(f"two exercises are labelled {label!r}: in {found[label].chapter} and {path.name}")
            if label:
                found[label] = Exercise(label, title, body, path.name)
    return found


def exercise(label, book=BOOK):
    """The exercise labelled ``label``, or a ValueError naming the labels there are."""
    found = exercises(book)
    if label not in found:
        raise ValueError(f"{Path(book)} has no {{exercise}} directive with :label: {label} (it has "
                         f"{', '.join(sorted(found)) or 'none'})")
    return found[label]


@lru_cache(maxsize=4)
def section_titles(book=BOOK):
    """'Chapter > Section' for every ``(label)=`` target placed just above a heading, by label."""
    titles = {}
    for path in chapter_files(book):
        chapter, pending = None, []
        for line in path.read_text().splitlines():
            target, heading = TARGET.match(line), HEADING.match(line)
            if target:
                pending.append(target.group(1))
            elif heading and pending:
                level, text = len(heading.group(1)), heading.group(2)
                chapter = text if level == 1 else chapter
                title = text if level == 1 or chapter is None else f"{chapter} > {text}"
                titles.update(dict.fromkeys(pending, title))
                pending = []
            elif line.strip():
                pending = []
    return titles


def section_title(label, book=BOOK):
    """The title of the handout section ``label``, or the label itself where the book is not at hand."""
    return section_titles(book).get(label, label) if Path(book).is_dir() else label
