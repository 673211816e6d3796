"""Label the bibliography as the text cites it, "Ho et al., 2020", instead of with pybtex's alpha codes ("HJA20").

The chapters cite author-year (``bibtex_reference_style: author_year``): one or two surnames, or the first and "et
al." for three or more. Two works that would share a label (the DDIM and the score-SDE paper are both "Song et al.,
2021") are labelled with every author where a work has three, which is how the chapters cite it (``{cite:ps}``).
"""

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle

FULL_UP_TO = 3  # authors listed in full, where the short label is shared


def surnames(entry):
    """The entry's authors' (or editors') surnames, braces removed."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    return [" ".join(person.last_names).replace("{", "").replace("}", "") for person in people]


def joined(names, full):
    """"A", "A and B", "A, B, and C" with ``full``, else "A et al." for three or more."""
    if len(names) <= 2:
        return " and ".join(names)
    return f"{', '.join(names[:-1])}, and {names[-1]}" if full else f"{names[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        short = [f"{joined(surnames(entry), False)}, {entry.fields['year']}" for entry in entries]
        shared = Counter(short)
        for entry, label in zip(entries, short):
            if shared[label] > 1 and len(surnames(entry)) <= FULL_UP_TO:
                label = f"{joined(surnames(entry), True)}, {entry.fields['year']}"
            yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year_labels", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
