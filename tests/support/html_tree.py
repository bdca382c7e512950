"""A small element tree from html.parser, strict about nesting: for checking generated pages, not for the web."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

# elements HTML never closes
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    def iter(self, tag: str | None = None) -> Iterator[Element]:
        """This element and every element below it, in document order (only ``tag`` ones when given)."""
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter(tag)

    def find(self, tag: str, **attrs: str) -> Element:
        found = [e for e in self.iter(tag) if all(e.attrs.get(k) == v for k, v in attrs.items())]
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = [name for name, _ in attrs]
        assert len(names) == len(set(names)), f"<{tag}> repeats an attribute: {names}"
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert tag not in VOID, f"</{tag}> closes a void element"
        open_tag = self.stack[-1].tag
        assert open_tag == tag, f"</{tag}> closes <{open_tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Element:
    """The page's tree; AssertionError where an end tag does not close the element last opened."""
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], f"unclosed: {[e.tag for e in builder.stack[1:]]}"
    return builder.root


def rows(table: Element) -> list[list[Element]]:
    """The cells (th and td) of each row of ``table``, header rows first."""
    return [[c for c in tr.children if isinstance(c, Element) and c.tag in ("th", "td")] for tr in table.iter("tr")]


def header_and_body(table: Element) -> tuple[list[str], list[list[Element]]]:
    """The name of each column (a grouped column's as "group part") and the body's rows of cells.

    Reads a header of one row, or of two where a cell spans both rows (rowspan 2) or heads a group of
    the second row's cells (colspan); fails on any other shape, so a broken header shows.
    """
    head_rows, body = rows(table.find("thead")), rows(table.find("tbody"))
    assert 1 <= len(head_rows) <= 2, f"{len(head_rows)} header rows"
    parts = iter(head_rows[1] if len(head_rows) == 2 else [])
    names: list[str] = []
    for cell in head_rows[0]:
        span = int(cell.attrs.get("colspan") or 1)
        if len(head_rows) == 1 or cell.attrs.get("rowspan") == "2":
            assert span == 1, cell.text()
            names.append(cell.text())
        else:
            names.extend(f"{cell.text()} {next(parts).text()}" for _ in range(span))
    assert next(parts, None) is None, "second header row has cells no group heads"
    return names, body
